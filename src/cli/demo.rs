//! `msc demo`: origin, gateway and client on loopback in one process, with a
//! fresh PKI in a temporary directory.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;

use crate::app;
use crate::cli::pki::{self, InitOptions};
use crate::config::client::ClientConfig;
use crate::config::gateway::GatewayConfig;

/// Runs the demo until SIGINT/SIGTERM. `workers` per component (0 = one per core).
pub fn run(workers: usize) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("msc-demo-").tempdir()?;
    let opts = InitOptions {
        dir: dir.path().to_path_buf(),
        gateway_listen: "127.0.0.1:0".into(),
        http_port: 0,
        https_port: 0,
        ..InitOptions::default()
    };
    pki::init(&opts)?;
    let pool = app::blocking_pool();

    let (origin, origin_addr) = crate::cli::origin::start_origin(SocketAddr::from(([127, 0, 0, 1], 0)), 1, &pool)?;

    let gw_file = dir.path().join("gateway.toml");
    let gw_text = std::fs::read_to_string(&gw_file)?.replace("workers = 0", &format!("workers = {workers}"));
    std::fs::write(&gw_file, &gw_text)?;
    let gw_cfg = GatewayConfig::load(&gw_file)?;
    let gateway = app::start_gateway(&gw_cfg, &pool).context("cannot start the gateway")?;

    // Now that the gateway has a port, point the client at it.
    let client_file = dir.path().join("client.toml");
    let text = pki::client_toml(&gateway.addr.to_string(), "localhost", 0, 0)
        .replace("workers = 0", &format!("workers = {workers}"))
        + "\n[control]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&client_file, text)?;
    let client_cfg = ClientConfig::load(&client_file)?;
    let client = app::start_client(&client_cfg, &pool).context("cannot start the client")?;
    let (http, _https) = client.slots[0];

    let mut out = std::io::stdout().lock();
    writeln!(out, "msc demo is running (Ctrl-C to stop)")?;
    writeln!(out, "  origin   http://{origin_addr}/  (built-in page)")?;
    writeln!(
        out,
        "  gateway  {}  (mutual TLS, driver: {})",
        gateway.addr, gateway.workers.driver
    )?;
    writeln!(out, "  client   {http}  (local proxy, slot 1)")?;
    writeln!(out, "  files    {}", dir.path().display())?;
    writeln!(out, "Try it:")?;
    writeln!(out, "  curl -x http://{http} http://{origin_addr}/")?;
    writeln!(
        out,
        "  curl -p -x http://{http} http://{origin_addr}/   # through a CONNECT tunnel"
    )?;
    writeln!(
        out,
        "  curl -x http://{http} http://blocked.example/   # denied by the gateway's policy"
    )?;
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);

    let sig = app::wait_for_signal()?;
    tracing::info!("signal {sig}: shutting down");
    client.stop();
    gateway.stop();
    origin.stop();
    println!("msc demo stopped");
    Ok(())
}
