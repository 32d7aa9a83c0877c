//! Command-line interface.

pub mod bundle;
pub mod demo;
pub mod enforce;
pub mod origin;
pub mod pki;
pub mod release;
pub mod status;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app;
use crate::cli::pki::InitOptions;
use crate::config::client::ClientConfig;
use crate::config::gateway::GatewayConfig;
use crate::config::{AnyConfig, load_any};

#[derive(Parser, Debug)]
#[command(
    name = "msc",
    version,
    about = "Mobile security client: browser traffic through mutual-TLS gateways"
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the client: the local proxy browsers use.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Exec the client (`msc run`) from the installed release (`update.install_dir/current`)
    /// when it is valid, else from this binary: what the packaged service runs.
    Launch {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a gateway: terminates mutual TLS and forwards to origins.
    Gateway {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Test PKI.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
    /// Supervise `msc run` (restart on death or a failed GET /health) and run the
    /// agent's periodic tasks; under a systemd service, systemd supervises instead.
    Watchdog {
        #[arg(long, short)]
        config: PathBuf,
        /// Supervise the client: auto = unless running as a systemd service.
        #[arg(long, value_enum, default_value = "auto")]
        supervise: crate::agent::watchdog::Supervise,
        /// The root proxy settings are enforced under (tests, images).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Print the administrator's uninstall warning (`uninstall.warning`) for the package scripts.
    UninstallWarning {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run origin, gateway and client on loopback with a fresh PKI.
    Demo {
        /// Workers per component (0 = one per core).
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Validate a client or gateway configuration file.
    CheckConfig { file: PathBuf },
    /// Print the PAC file the client serves (for configured, non-zero ports).
    Pac {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show a running client's gateways, network state and routing.
    Status {
        /// Client configuration (its control.listen is queried).
        #[arg(long, short, conflicts_with = "control")]
        config: Option<PathBuf>,
        /// Control API address, if no configuration is given.
        #[arg(long, default_value = "127.0.0.1:27778")]
        control: SocketAddr,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keep the machine's proxy settings pointed at the client (docs/enforcement.md).
    Enforce {
        #[arg(long, short)]
        config: PathBuf,
        /// Apply once and exit (default: keep checking every enforce.interval).
        #[arg(long, conflicts_with = "remove")]
        once: bool,
        /// Remove everything msc applied and exit.
        #[arg(long)]
        remove: bool,
        /// The root the settings are written under (tests, images).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Gateways: the shared session-ticket keys file (tls.ticket_keys).
    TicketKeys {
        #[command(subcommand)]
        cmd: TicketKeysCmd,
    },
    /// Turn protection off for a while (trusted users, if the admin config allows):
    /// the PAC says DIRECT and the client relays DIRECT until the time is up,
    /// `msc enable`, or the next screen lock, logout, suspend or shutdown.
    Disable {
        /// How long, e.g. 30m (at most `[disable] max`).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (required; logged by the client).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Turn protection back on after `msc disable` (trusted users).
    Enable {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Have the running client re-read its configuration file (trusted
    /// users; SIGHUP does the same). Exits non-zero with the reason if the
    /// new configuration is rejected (the running one then stays).
    Reload {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Write a support bundle (.tar.gz): versions, OS, redacted config,
    /// certificate names and expiry, the running client's status, PAC and
    /// recent log lines. Never key material or secrets.
    SupportBundle {
        /// Client configuration (its control.listen is queried).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Control API address (default: the configuration's control.listen).
        #[arg(long)]
        control: Option<SocketAddr>,
        /// Output file (default: msc-support-TIMESTAMP.tar.gz here).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the client's state as a tray icon (StatusNotifierItem) with a menu.
    Tray {
        #[arg(long, short)]
        config: PathBuf,
        /// Control API address (default: the configuration's control.listen).
        #[arg(long)]
        control: Option<SocketAddr>,
        /// How often the client's status is read.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// Signed code updates: make the signing key, sign a release (docs/fleet.md#releases-and-keys).
    Release {
        #[command(subcommand)]
        cmd: ReleaseCmd,
    },
    /// Run the built-in origin server (demo page and test endpoints).
    Origin {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

#[derive(Subcommand, Debug)]
enum ReleaseCmd {
    /// Write a new Ed25519 signing key (PKCS#8, mode 0600) and print its public
    /// key for the clients' `update.public_key`.
    Keygen {
        /// The private key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a binary as a release: writes the artifact, manifest.json and
    /// manifest.sig into a directory a gateway serves (`releases.dir`).
    Sign {
        /// The private key from `msc release keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The release's version (MAJOR.MINOR.PATCH[-pre]); clients install only newer ones.
        #[arg(long)]
        version: String,
        /// The msc binary to ship.
        #[arg(long)]
        binary: PathBuf,
        /// The releases directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where the running client's control socket is.
#[derive(clap::Args, Debug)]
struct SocketArgs {
    /// Client configuration (its control.socket is used).
    #[arg(long, short, conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// The control socket [default: /run/msc/control.sock, else $XDG_RUNTIME_DIR/msc/control.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> Result<PathBuf, ExitCode> {
        if let Some(p) = &self.socket {
            return Ok(p.clone());
        }
        if let Some(f) = &self.config {
            return match ClientConfig::load(f) {
                Ok(c) => c.socket.ok_or_else(|| {
                    config_error(format!(
                        "{}: control.socket: the client serves no control socket (set control.socket)",
                        f.display()
                    ))
                }),
                Err(e) => Err(config_error(e)),
            };
        }
        let packaged = PathBuf::from("/run/msc/control.sock");
        if packaged.exists() {
            return Ok(packaged);
        }
        Ok(crate::config::client::default_socket().unwrap_or(packaged))
    }
}

/// Sends `req` to the control socket and prints the answer.
fn socket_command(args: &SocketArgs, req: crate::control::socket::Request) -> anyhow::Result<ExitCode> {
    let path = match args.path() {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let reply = crate::control::socket::request(&path, &req)?;
    if reply.ok {
        println!("{}", reply.message);
        if let Some(s) = reply.state {
            println!("state: {s}");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {}", reply.message);
        Ok(ExitCode::from(1))
    }
}

#[derive(Subcommand, Debug)]
enum TicketKeysCmd {
    /// Add a new random key that starts sealing after --start-in (at once
    /// for a new file), drop keys whose successor has sealed for --grace;
    /// the file is replaced atomically, mode 0600. Copy it to every gateway
    /// instance before the new key starts.
    Rotate {
        file: PathBuf,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        start_in: std::time::Duration,
        /// Keep it equal to the gateways' tls.ticket_grace.
        #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
}

#[derive(Subcommand, Debug)]
enum PkiCmd {
    /// Create a CA, a gateway and a client certificate, and client.toml/gateway.toml.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Client certificate subject CN.
        #[arg(long, default_value = "alice")]
        user: String,
        /// Client certificate SAN e-mail.
        #[arg(long)]
        email: Option<String>,
        /// Gateway certificate SANs (repeatable; DNS names or IPs).
        #[arg(long = "san", default_values = ["localhost", "127.0.0.1"])]
        sans: Vec<String>,
        /// Address the generated gateway.toml listens on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        gateway_listen: String,
        #[arg(long, default_value_t = 3128)]
        http_port: u16,
        #[arg(long, default_value_t = 3129)]
        https_port: u16,
        /// Validity of the leaf certificates, in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Lines a log writer's queue holds before new lines are dropped (never
/// blocking a worker). tracing-appender's default, 128,000, allocates its
/// whole queue up front: about 4 MB per writer, most of a client's heap at
/// rest (perf/rest.md). A burst beyond this is a flood the log cannot show
/// anyway; what is dropped is counted by tracing-appender.
const LOG_QUEUE_LINES: usize = 2048;

fn log_queue<W: std::io::Write + Send + 'static>(
    w: W,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(w)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_arg = cli.log.clone();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let Cmd::Launch { config } = &cli.cmd {
        // Written at once: exec replaces the process, a queue would lose lines.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(false)
            .init();
        return match crate::agent::launch::launch(config, &log_arg) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Log lines are written by a background thread: workers never block on stderr.
    let (writer, _guard) = log_queue(std::io::stderr());
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    // The client also keeps its recent lines in memory for support bundles
    // (`GET /logs`), written by their own background thread.
    let (ring, _ring_guard) = if matches!(cli.cmd, Cmd::Run { .. } | Cmd::Demo { .. }) {
        let ring = crate::control::logring::install(crate::control::logring::LogRing::new(
            crate::control::logring::DEFAULT_LINES,
        ));
        let (w, g) = log_queue(crate::control::logring::RingWriter::new(ring));
        (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(w)
                    .with_target(false)
                    .with_ansi(false),
            ),
            Some(g),
        )
    } else {
        (None, None)
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(ring)
        .init();
    match run(cli.cmd, &log_arg) {
        Ok(code) => code,
        Err(e) => {
            // Flush queued log lines first; the error is printed once.
            drop(_guard);
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit status for a failed start (docs/config.md, "Exit status"):
/// 2 = the configuration cannot be used (a file, a key, a certificate, a
/// port in use), 3 = a port msc needs is held by another user (possible
/// squatting), 1 = anything else.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(h) = e.chain().find_map(|c| c.downcast_ref::<crate::ports::PortHeld>()) {
        return if h.other_user { 3 } else { 2 };
    }
    if e.chain().any(|c| c.is::<crate::agent::instance::AlreadyRunning>()) {
        return 2;
    }
    if e.chain()
        .any(|c| c.is::<msc_tls::SetupError>() || c.is::<crate::config::ConfigError>())
    {
        return 2;
    }
    1
}

fn ready(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// The text `msc uninstall-warning` prints without `uninstall.warning`.
pub const DEFAULT_UNINSTALL_WARNING: &str = "Removing msc stops the security client: browsers on this machine will no longer be protected, and may stop working until their proxy settings are changed.";

fn run(cmd: Cmd, log: &str) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run { config } => {
            // The local file with the gateway's document laid over it (docs/fleet.md).
            let cfg = match crate::control::remote::effective(&config) {
                Ok(c) => c,
                Err(e) => return Ok(config_error(e)),
            };
            crate::agent::watchdog::follow_supervisor();
            let dir = crate::agent::instance::runtime_dir(cfg.runtime_dir.as_deref());
            let _lock = crate::agent::instance::acquire(&dir, &crate::agent::instance::client_keys(&cfg))?;
            app::raise_fd_limit();
            let pool = app::blocking_pool();
            let client = app::start_client(&cfg, &pool)?;
            let mut line = format!(
                "msc client ready: {} workers, driver {}",
                client.workers.len(),
                client.workers.driver
            );
            let routing = client.routing.load();
            for (i, (http, https)) in client.slots.iter().enumerate() {
                let gw = routing.for_slot(i).next().map(|g| g.label()).unwrap_or_default();
                line.push_str(&format!("; slot {} http {http} https {https} -> gateway {gw}", i + 1));
            }
            drop(routing);
            line.push_str(&format!("; control http://{}/proxy.pac", client.control.addr));
            let mut signals = app::client_signals()?;
            ready(&line);
            crate::agent::systemd::ready(&format!("control http://{}/", client.control.addr));
            // Also in the log (and so in support bundles).
            tracing::info!("msc {}: {line}", env!("CARGO_PKG_VERSION"));
            let reloader = client.control.reload_handle();
            let sig = app::wait_for_signal_or(&mut signals, move || {
                // The outcome is logged by the control plane (and in /status).
                let _ = reloader.reload();
            });
            tracing::info!("signal {sig}: stopping (open connections get {:?})", app::GRACE);
            crate::agent::systemd::stopping();
            client.stop();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gateway { config } => {
            let cfg = match GatewayConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return Ok(config_error(e)),
            };
            let dir = crate::agent::instance::runtime_dir(cfg.runtime_dir.as_deref());
            let _lock = crate::agent::instance::acquire(&dir, &crate::agent::instance::gateway_keys(&cfg))?;
            app::raise_fd_limit();
            let pool = app::blocking_pool();
            let gw = app::start_gateway(&cfg, &pool)?;
            ready(&format!(
                "msc gateway ready: listening on {} ({} workers, driver {}, {} deny rules)",
                gw.addr,
                gw.workers.len(),
                gw.workers.driver,
                cfg.deny.len()
            ));
            tracing::info!("egress policy: {}", cfg.egress);
            crate::agent::systemd::ready(&format!("listening on {}", gw.addr));
            let sig = app::wait_for_signal()?;
            tracing::info!("signal {sig}: stopping (open connections get {:?})", app::GRACE);
            crate::agent::systemd::stopping();
            gw.stop();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pki {
            cmd:
                PkiCmd::Init {
                    dir,
                    user,
                    email,
                    sans,
                    gateway_listen,
                    http_port,
                    https_port,
                    days,
                    force,
                },
        } => {
            let email = email.or_else(|| Some(format!("{user}@example.com")));
            let opts = InitOptions {
                dir,
                user,
                email,
                gateway_names: sans,
                gateway_listen,
                http_port,
                https_port,
                days,
                force,
            };
            for p in crate::cli::pki::init(&opts)? {
                println!("wrote {}", p.display());
            }
            println!(
                "next: msc gateway --config {0}/gateway.toml   and   msc run --config {0}/client.toml",
                opts.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Launch { config } => crate::agent::launch::launch(&config, log),
        Cmd::Watchdog {
            config,
            supervise,
            root,
        } => {
            // With the cached central settings (enforcement...), docs/fleet.md.
            let cfg = match crate::control::remote::cached(&config) {
                Ok(c) => c,
                Err(e) => return Ok(config_error(e)),
            };
            let tasks = match crate::agent::agent_tasks(&cfg, &root) {
                Ok(t) => t,
                Err(e) => return Ok(config_error(e)),
            };
            crate::agent::watchdog::run(
                crate::agent::watchdog::Options {
                    config,
                    cfg,
                    supervise,
                    msc: std::env::current_exe()?,
                    log: log.to_string(),
                },
                tasks,
            )
        }
        Cmd::Release {
            cmd: ReleaseCmd::Keygen { out },
        } => {
            let public = crate::cli::release::keygen(&out)?;
            println!("{public}");
            eprintln!(
                "wrote the private key {} (mode 0600; keep it offline). Put the line above in the clients' configuration:\n[update]\npublic_key = \"{public}\"",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Release {
            cmd:
                ReleaseCmd::Sign {
                    key,
                    version,
                    binary,
                    out,
                },
        } => {
            let s = crate::cli::release::sign(&key, &version, &binary, &out)?;
            println!(
                "signed release {} ({} bytes, sha256 {}): {}, {} and {} in {}",
                s.manifest.version,
                s.manifest.size,
                s.manifest.sha256,
                s.manifest.file,
                crate::release::MANIFEST,
                crate::release::SIGNATURE,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::UninstallWarning { config } => {
            // For the package's removal script: a broken or missing file still
            // yields a warning (the default one).
            // Read without validating the rest: at removal time the
            // credentials may already be gone.
            // A central text (docs/fleet.md) first, when the whole thing is readable.
            let central = crate::control::remote::cached(&config)
                .ok()
                .and_then(|c| c.uninstall_warning);
            let text = central
                .or_else(|| {
                    std::fs::read_to_string(&config)
                        .ok()
                        .and_then(|t| t.parse::<toml::Table>().ok())
                        .and_then(|t| t.get("uninstall")?.get("warning")?.as_str().map(str::to_string))
                })
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_UNINSTALL_WARNING.to_string());
            println!("{}", text.trim());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo { workers } => {
            app::raise_fd_limit();
            crate::cli::demo::run(workers)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig { file } => match load_any(&file) {
            Ok(AnyConfig::Client(c)) => {
                println!(
                    "{}: valid client configuration ({} gateways, {} workers)",
                    file.display(),
                    c.servers.len(),
                    c.workers
                );
                Ok(ExitCode::SUCCESS)
            }
            Ok(AnyConfig::Gateway(g)) => {
                println!(
                    "{}: valid gateway configuration (listen {}, {} deny rules)",
                    file.display(),
                    g.listen,
                    g.deny.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(config_error(e)),
        },
        Cmd::Pac { config } => {
            let cfg = match ClientConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return Ok(config_error(e)),
            };
            let ports: Vec<(u16, u16)> = cfg.servers.iter().map(|s| (s.http_port, s.https_or_http())).collect();
            if ports.iter().any(|&(a, b)| a == 0 || b == 0) {
                return Ok(config_error(format!(
                    "{}: servers: a port is 0 (chosen at start-up): fetch the PAC from the running client's control API instead",
                    config.display()
                )));
            }
            let pac = crate::control::render_pac(&cfg, &ports)?;
            print!("{}", pac.text);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { config, control, json } => {
            let addr = match config {
                Some(f) => match ClientConfig::load(&f) {
                    Ok(c) => c.control,
                    Err(e) => return Ok(config_error(e)),
                },
                None => control,
            };
            let body = crate::cli::status::fetch(addr)?;
            if json {
                println!("{body}");
            } else {
                print!("{}", crate::cli::status::render(&body)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Enforce {
            config,
            once,
            remove,
            root,
        } => {
            let mode = if remove {
                enforce::Mode::Remove
            } else if once {
                enforce::Mode::Once
            } else {
                enforce::Mode::Loop
            };
            enforce::run(&config, &root, mode)
        }
        Cmd::TicketKeys {
            cmd: TicketKeysCmd::Rotate { file, start_in, grace },
        } => {
            println!("{}", crate::gateway::tickets::rotate_file(&file, start_in, grace)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Disable {
            duration,
            reason,
            socket,
        } => socket_command(&socket, crate::control::socket::Request::Disable { duration, reason }),
        Cmd::Enable { socket } => socket_command(&socket, crate::control::socket::Request::Enable),
        Cmd::Reload { socket } => socket_command(&socket, crate::control::socket::Request::Reload),
        Cmd::SupportBundle { config, control, out } => {
            let (path, files) =
                crate::cli::bundle::create(&crate::cli::bundle::BundleOptions { config, control, out })?;
            println!("wrote {} ({} files):", path.display(), files.len());
            for f in files {
                println!("  {f}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tray {
            config,
            control,
            interval,
        } => {
            let opts = crate::agent::tray::TrayOptions {
                config,
                control,
                interval,
            };
            let r = crate::agent::tray::run(&opts, |name, view| {
                ready(&format!(
                    "msc tray ready: bus name {name}; state {} ({})",
                    view.state, view.reason
                ));
            });
            match r {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) if e.is::<crate::config::ConfigError>() => Ok(config_error(e)),
                Err(e) => Err(e),
            }
        }
        Cmd::Origin { listen, workers } => {
            let pool = app::blocking_pool();
            let (w, addr) = origin::start_origin(listen, workers, &pool)?;
            ready(&format!("msc origin ready: listening on {addr}"));
            app::wait_for_signal()?;
            w.stop();
            Ok(ExitCode::SUCCESS)
        }
    }
}
