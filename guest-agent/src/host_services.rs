//! The guest's side of host services: a listener on the guest's 127.0.0.1 for
//! each host port the machine allows, each connection carried over vsock to
//! the host (see `berth_platform::host_services`). This is how the engine in
//! the VM pulls from a registry on the host's loopback, under the same address
//! the user gave on the host.

use std::net::Ipv4Addr;

use berth_platform::host_services;
use berth_platform::protocol::{StreamFrame, HOST_SERVICE_PORT};
use tokio::net::{TcpListener, TcpStream};
use tokio_vsock::{VsockAddr, VsockStream, VMADDR_CID_HOST};

/// Listens on 127.0.0.1 for each of `ports`; a port that cannot be bound is
/// reported and skipped.
pub async fn serve(ports: &[u16]) {
    for &port in ports {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => {
                tokio::spawn(accept_loop(listener, port));
            }
            Err(e) => eprintln!("berth-agent: host port {port}: binding 127.0.0.1:{port}: {e}"),
        }
    }
}

async fn accept_loop(listener: TcpListener, port: u16) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Err(e) = carry(client, port).await {
                eprintln!("berth-agent: host port {port}: {e}");
            }
        });
    }
}

async fn carry(client: TcpStream, port: u16) -> anyhow::Result<()> {
    let mut host = VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, HOST_SERVICE_PORT)).await?;
    host_services::request(&mut host, port).await?;
    let _ = client.set_nodelay(true);
    StreamFrame::splice(client, host).await?;
    Ok(())
}
