//! A local HTTP receiver for reports: what a report endpoint sees, recorded
//! for the test. Plain HTTP/1.1 on 127.0.0.1 (the worker accepts `http://`
//! only for loopback), one request per connection, each answered `200 OK`
//! (or the status queued with [`Receiver::fail_next`]).
//!
//! Hand-written rather than a server crate: it is forty lines of the test
//! kit and keeps the kit free of an async web stack.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST /path`.
    pub request_line: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// The receiver; it serves until the test binary exits.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT/reports`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    failures: Arc<Mutex<Vec<u16>>>,
}

/// Largest body accepted (a report is far smaller).
const MAX_BODY: usize = 64 * 1024 * 1024;

impl Receiver {
    /// Listen on a free port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the receiver")?;
        let port = listener.local_addr()?.port();
        let receiver = Self {
            url: format!("http://127.0.0.1:{port}/reports"),
            received: Arc::default(),
            failures: Arc::default(),
        };
        let state = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = state.serve(stream);
            }
        });
        Ok(receiver)
    }

    /// Answer the next request with `status` instead of 200.
    pub fn fail_next(&self, status: u16) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(status);
    }

    /// Every request so far (failed ones included).
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn serve(&self, stream: TcpStream) -> Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut length = 0usize;
        let mut authorization = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length.min(MAX_BODY)];
        reader.read_exact(&mut body)?;
        let status = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            if failures.is_empty() {
                200
            } else {
                failures.remove(0)
            }
        };
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Received {
                request_line: request_line.trim_end().to_string(),
                authorization,
                body,
            });
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        Ok(())
    }
}
