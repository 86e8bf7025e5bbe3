//! A stand-in for the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`), enough
//! to run the `control` binary's Lambda loop: it hands out the given events
//! on `GET /2018-06-01/runtime/invocation/next` and reports what the
//! function posts back (`…/response`, `…/error`, `…/init/error`).
//!
//! Plain HTTP/1.1 on std sockets, one thread per connection (the runtime's
//! client keeps connections alive). When the events run out, `next` is not
//! answered; dropping the stand-in stops its threads.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// One post from the function: its path and body.
pub type Post = (String, String);

/// A running stand-in.
pub struct RuntimeApi {
    /// `127.0.0.1:PORT`, for `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    posts: Receiver<Post>,
    stop: Arc<AtomicBool>,
}

struct Shared {
    events: Mutex<VecDeque<(String, String)>>,
    posts: Mutex<Sender<Post>>,
    stop: Arc<AtomicBool>,
}

impl RuntimeApi {
    /// Serve `events` (JSON texts), in order, with request ids `req-0`, ….
    pub fn start(events: &[String]) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let (sender, posts) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            events: Mutex::new(
                events
                    .iter()
                    .enumerate()
                    .map(|(n, e)| (format!("req-{n}"), e.clone()))
                    .collect(),
            ),
            posts: Mutex::new(sender),
            stop: Arc::clone(&stop),
        });
        std::thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || serve(stream, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            address,
            posts,
            stop,
        })
    }

    /// The next post, waiting at most `timeout`.
    pub fn next_post(&self, timeout: Duration) -> Result<Post> {
        self.posts
            .recv_timeout(timeout)
            .context("the function posted nothing")
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !shared.stop.load(Ordering::Relaxed) {
        let Some((method, path, body)) = read_request(&mut reader, &shared.stop) else {
            return;
        };
        let answer = if method == "GET" && path.ends_with("/invocation/next") {
            let event = loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let next = shared
                    .events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                match next {
                    Some(event) => break event,
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() + 300_000)
                .unwrap_or_default();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Lambda-Runtime-Aws-Request-Id: {}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:control\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\n\
                 Content-Length: {}\r\n\r\n{}",
                event.0,
                event.1.len(),
                event.1
            )
        } else {
            let _ = shared
                .posts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send((path, body));
            let reply = r#"{"status":"OK"}"#;
            format!(
                "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            )
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// One request: method, path, body. `None` when the connection closes or
/// the stand-in stops.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    stop: &AtomicBool,
) -> Option<(String, String, String)> {
    let mut line = String::new();
    // Wait for a request line, checking for the stop between timeouts.
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, String::from_utf8_lossy(&body).into_owned()))
}
