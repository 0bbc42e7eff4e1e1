//! The room-list benchmark's socket measures: the same request from a
//! client library (hyper, as a Rust caller would use) and from a hand-written
//! blocking client (the cheapest possible caller), beside the transport
//! floor (`GET /health`) and the physical floor (an echo over a Unix
//! socket), for one or more servers measured in turn.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::dataset::BIG_USER;
use crate::support::{echo_floor, Connection, RawConnection};

/// Latencies (ns) and queries per second of one measure.
pub(crate) struct Load {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) qps: f64,
}

impl Load {
    pub(crate) fn micros(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "p50 {:>8.2} µs  p99 {:>8.2} µs  {:>8.0} queries/s",
            self.micros(0.5),
            self.micros(0.99),
            self.qps
        )
    }
}

pub(crate) fn room_list_path() -> String {
    format!("/v1/users/{BIG_USER}/room_list")
}

/// `clients` concurrent hyper clients (on the benchmark's tokio runtime)
/// sending `method path body` for `seconds`.
pub(crate) async fn hyper_load(
    socket: &Path,
    method: &'static str,
    path: &str,
    body: Bytes,
    clients: usize,
    seconds: f64,
) -> Load {
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (socket, body, path, barrier) = (
            socket.to_owned(),
            body.clone(),
            path.to_owned(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&socket).await.unwrap();
            for _ in 0..200 {
                connection.send(method, &path, body.clone()).await.unwrap();
            }
            barrier.wait().await;
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut histogram = Histogram::<u64>::new(3).unwrap();
            while Instant::now() < deadline {
                let sent = Instant::now();
                connection.send(method, &path, body.clone()).await.unwrap();
                histogram.record(sent.elapsed().as_nanos() as u64).unwrap();
            }
            histogram
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        histogram.add(task.await.unwrap()).unwrap();
    }
    let qps = histogram.len() as f64 / started.elapsed().as_secs_f64();
    Load { histogram, qps }
}

/// `clients` concurrent blocking hand-written clients, one thread each.
pub(crate) async fn raw_load(
    socket: &Path,
    request: Vec<u8>,
    clients: usize,
    seconds: f64,
) -> Load {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        let barrier = std::sync::Barrier::new(clients + 1);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..clients)
                .map(|_| {
                    let (socket, request, barrier) = (&socket, &request, &barrier);
                    scope.spawn(move || {
                        let mut connection = RawConnection::open(socket).unwrap();
                        for _ in 0..200 {
                            assert_eq!(connection.send(request).unwrap().0, 200);
                        }
                        barrier.wait();
                        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                        let mut histogram = Histogram::<u64>::new(3).unwrap();
                        while Instant::now() < deadline {
                            let sent = Instant::now();
                            connection.send(request).unwrap();
                            histogram.record(sent.elapsed().as_nanos() as u64).unwrap();
                        }
                        histogram
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            let mut histogram = Histogram::<u64>::new(3).unwrap();
            for thread in threads {
                histogram.add(thread.join().unwrap()).unwrap();
            }
            let qps = histogram.len() as f64 / started.elapsed().as_secs_f64();
            Load { histogram, qps }
        })
    })
    .await
    .unwrap()
}

/// The physical floor: an echo of `size` bytes over a Unix socket, 1 client.
pub(crate) async fn echo(dir: &Path, size: usize, seconds: f64) -> Load {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        // Calibrate the count to roughly `seconds`.
        let probe = echo_floor(&dir, size, 100, 1_000);
        let mean = probe.iter().sum::<u64>() as f64 / probe.len() as f64;
        let count = ((seconds * 1e9 / mean.max(1.0)) as usize).clamp(1_000, 2_000_000);
        let started = Instant::now();
        let latencies = echo_floor(&dir, size, 1_000, count);
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for latency in &latencies {
            histogram.record(*latency).unwrap();
        }
        let qps = latencies.len() as f64 / started.elapsed().as_secs_f64();
        Load { histogram, qps }
    })
    .await
    .unwrap()
}
