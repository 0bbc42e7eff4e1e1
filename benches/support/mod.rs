//! What the benchmarks share: a release `roomcache serve` process on a
//! private socket, and keep-alive HTTP/1.1 connections to it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// A running server; stopped with SIGTERM by [`Server::stop`].
pub(crate) struct Server {
    child: Child,
    pub(crate) socket: PathBuf,
}

impl Server {
    /// Starts `binary serve` on `dir/<schema>.sock` with `args`, and waits
    /// until `/health` answers.
    pub(crate) async fn start(
        binary: &Path,
        dir: &Path,
        url: &str,
        schema: &str,
        args: &[String],
    ) -> Server {
        let socket = dir.join(format!("{schema}.sock"));
        let child = Command::new(binary)
            .args(["serve", "--config", "/dev/null"])
            .arg("--socket-path")
            .arg(&socket)
            .args(["--database-url", url, "--schema", schema])
            .args(args)
            .env("ROOMCACHE_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the server");
        let server = Server { child, socket };
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Ok(mut connection) = Connection::open(&server.socket).await {
                if connection.get("/health").await.is_ok() {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server did not become ready");
    }

    /// The server's resident set size, in bytes.
    pub(crate) fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    pub(crate) fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to the socket.
pub(crate) struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    pub(crate) async fn open(socket: &Path) -> Result<Connection, Box<dyn std::error::Error>> {
        let stream = UnixStream::connect(socket).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// Sends a request; the body of a 2xx answer, an error otherwise.
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, Box<dyn std::error::Error>> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"))
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!("status {status}: {}", String::from_utf8_lossy(&bytes)).into());
        }
        Ok(bytes)
    }

    pub(crate) async fn get(&mut self, path: &str) -> Result<Bytes, Box<dyn std::error::Error>> {
        self.send("GET", path, Bytes::new()).await
    }
}

/// One keep-alive HTTP/1.1 connection written by hand over a blocking
/// socket: the request bytes are built once, the answer is read up to its
/// `Content-Length`. The cheapest client there is, so a measure with it is
/// the server's and the transport's, not a client library's.
pub(crate) struct RawConnection {
    stream: std::os::unix::net::UnixStream,
    buffer: Vec<u8>,
}

impl RawConnection {
    pub(crate) fn open(socket: &Path) -> std::io::Result<RawConnection> {
        Ok(RawConnection {
            stream: std::os::unix::net::UnixStream::connect(socket)?,
            buffer: Vec::with_capacity(1 << 16),
        })
    }

    /// The bytes of a request (kept by the caller and sent many times).
    pub(crate) fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }

    /// Sends `request` and reads the whole answer; returns its status and body length.
    pub(crate) fn send(&mut self, request: &[u8]) -> std::io::Result<(u16, usize)> {
        use std::io::{Error, ErrorKind, Read, Write};
        self.stream.write_all(request)?;
        self.buffer.clear();
        let mut chunk = [0u8; 16384];
        loop {
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
            let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if self.buffer.len() >= end + 4 + length {
                return Ok((status, length));
            }
        }
    }
}

/// The physical floor of a request over a Unix socket: a thread that echoes
/// whatever it reads, and a blocking client that writes `size` bytes and
/// reads them back. Returns the client's round-trip latencies (ns) for
/// `count` round trips after `warm_up`.
pub(crate) fn echo_floor(dir: &Path, size: usize, warm_up: usize, count: usize) -> Vec<u64> {
    use std::io::{Read, Write};
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("binding the echo socket");
    let server = std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut buffer = [0u8; 16384];
        while let Ok(read) = stream.read(&mut buffer) {
            if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                return;
            }
        }
    });
    let mut client = std::os::unix::net::UnixStream::connect(&path).expect("connecting to echo");
    let message = vec![b'x'; size];
    let mut answer = vec![0u8; size];
    let mut latencies = Vec::with_capacity(count);
    for i in 0..warm_up + count {
        let sent = Instant::now();
        client.write_all(&message).expect("echo write");
        client.read_exact(&mut answer).expect("echo read");
        if i >= warm_up {
            latencies.push(sent.elapsed().as_nanos() as u64);
        }
    }
    drop(client);
    let _ = server.join();
    let _ = std::fs::remove_file(&path);
    latencies
}
