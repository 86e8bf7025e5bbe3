//! A local HTTP server standing in for the registration endpoint or for
//! CloudFormation's pre-signed response URL: it records every request and
//! answers with what the test's function says.
//!
//! Plain HTTP/1.1 on std sockets, one request per connection (answered with
//! `Connection: close`), one thread per connection; dropping it stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `PUT`, …
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Recorded {
    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// The answer to a request: status and JSON body.
pub type Answer = (u16, String);

type Answerer = dyn Fn(&Recorded) -> Answer + Send + Sync;

/// A running server.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Receiver<Recorded>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serve, answering each request with `answer(request)`.
    pub fn start(answer: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let (sender, requests) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answerer> = Arc::new(answer);
        let sender = Arc::new(Mutex::new(sender));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let answer = Arc::clone(&answer);
                        let sender = Arc::clone(&sender);
                        std::thread::spawn(move || serve(stream, &*answer, &sender));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            url,
            requests,
            stop,
        })
    }

    /// Answer every request with `status` and `body`.
    pub fn answering(status: u16, body: &str) -> Result<Self> {
        let body = body.to_string();
        Self::start(move |_| (status, body.clone()))
    }

    /// The next request, waiting at most five seconds.
    pub fn next(&self) -> Result<Recorded> {
        self.requests
            .recv_timeout(Duration::from_secs(5))
            .context("no request arrived")
    }

    /// The requests received so far and not yet taken.
    pub fn received(&self) -> Vec<Recorded> {
        self.requests.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, answer: &Answerer, sender: &Mutex<Sender<Recorded>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let Some(request) = read_request(&mut BufReader::new(stream)) else {
        return;
    };
    let (status, body) = answer(&request);
    let _ = sender
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(request);
    let _ = write!(
        writer,
        "HTTP/1.1 {status} Stand-in\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = writer.flush();
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "content-length" {
            length = value.parse().ok().filter(|n| *n <= MAX_BODY)?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
