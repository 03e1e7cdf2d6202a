//! A fault-injecting TCP proxy: put it between a client and its server (loopback only), then cut every
//! connection, stall traffic, refuse new connections, or resume — the faults a real network produces,
//! without stopping a shared server.
//!
//! fleetcron's store tests use it to cut a store's connections mid-mutation, and `fleetcron torture` puts
//! one in front of each worker process on a server store. It is a crate of its own, with no dependency but
//! tokio, so that the shipped CLI links neither the test suite nor anything it does not run.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetcron_faultproxy::FaultProxy;
//!
//! let proxy = FaultProxy::start("127.0.0.1:5432".parse()?).await?;
//! let url = format!("postgres://postgres@{}/test", proxy.address());
//! // … connect the store to `url`, then:
//! proxy.cut(); // every open connection is closed at once
//! proxy.refuse(); // new connections are closed as soon as they are accepted (the server is "down")
//! proxy.resume(); // traffic and new connections pass again
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy. Dropping it stops accepting and cuts every connection.
pub struct FaultProxy {
    address: SocketAddr,
    /// Incremented by `cut`: every connection opened before the change is closed.
    generation: watch::Sender<u64>,
    stalled: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) that forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (generation, _) = watch::channel(0u64);
        let stalled = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let accept = {
            let generation = generation.clone();
            let (stalled, refusing) = (stalled.clone(), refusing.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if refusing.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let cut = generation.subscribe();
                    let stalled = stalled.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            relay(client, server, cut, stalled).await;
                        }
                    });
                }
            })
        };
        Ok(FaultProxy {
            address,
            generation,
            stalled,
            refusing,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every open connection at once (a server restart or a network cut, seen from the client).
    pub fn cut(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Holds all traffic (bytes are not lost, only delayed) until [`FaultProxy::resume`].
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Refuses new connections (the server is down) until [`FaultProxy::resume`].
    pub fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
    }

    /// Lets traffic and new connections through again.
    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(client: TcpStream, server: TcpStream, mut cut: watch::Receiver<u64>, stalled: Arc<AtomicBool>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = pump(client_read, server_write, stalled.clone());
    let downstream = pump(server_read, client_write, stalled);
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut.changed() => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        to.write_all(&buffer[..read]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_cuts_and_refuses() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(upstream).await.expect("proxy");
        let mut client = TcpStream::connect(proxy.address()).await.expect("connect");
        client.write_all(b"ping").await.expect("write");
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.expect("echo");
        assert_eq!(&answer, b"ping");
        proxy.cut();
        let mut rest = [0u8; 1];
        let after_cut = tokio::time::timeout(Duration::from_secs(2), client.read(&mut rest)).await;
        assert!(
            matches!(after_cut, Ok(Ok(0)) | Ok(Err(_))),
            "a cut connection is closed"
        );
        proxy.refuse();
        let mut refused = TcpStream::connect(proxy.address())
            .await
            .expect("tcp accept still happens");
        let closed = tokio::time::timeout(Duration::from_secs(2), refused.read(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "refused connections are closed at once"
        );
        proxy.resume();
        let mut again = TcpStream::connect(proxy.address()).await.expect("connect");
        again.write_all(b"pong").await.expect("write");
        again.read_exact(&mut answer).await.expect("echo");
        assert_eq!(&answer, b"pong");
    }
}
