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
pub struct Server {
    child: Child,
    pub socket: PathBuf,
}

impl Server {
    /// Starts `binary serve` on `dir/<schema>.sock` with `args`, and waits
    /// until `/health` answers.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        url: &str,
        schema: &str,
        args: &[String],
    ) -> Server {
        let socket = dir.join(format!("{schema}.sock"));
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(dir.join("none.toml"))
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
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to the socket.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(socket: &Path) -> Result<Connection, Box<dyn std::error::Error>> {
        let stream = UnixStream::connect(socket).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// Sends a request; the body of a 2xx answer, an error otherwise.
    pub async fn send(
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

    pub async fn get(&mut self, path: &str) -> Result<Bytes, Box<dyn std::error::Error>> {
        self.send("GET", path, Bytes::new()).await
    }
}
