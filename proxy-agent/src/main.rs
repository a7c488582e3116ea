//! `proxy-agent`: the agent (`run`) and the operator's CLI.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use proxy_agent::{cli, config, protocol::Request, run};

#[derive(Parser)]
#[command(
    name = "proxy-agent",
    version,
    about = "SA:MP / open.mp cluster proxy: one public address in front of many shards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the CLI finds the agent.
#[derive(Args)]
struct Target {
    /// The agent's control socket.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Read the socket path from this config file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Print the reply as JSON, for scripts.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP data plane, attach it and keep it in line with the config.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Run this XDP object instead of the one built into the agent (a
        /// rebuilt data plane, from the same source tree's `cargo xtask
        /// build-ebpf`). A running data plane is upgraded in place.
        #[arg(long)]
        xdp_object: Option<PathBuf>,
    },
    /// Validate a config file and print what it describes; changes nothing.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Take the data plane off: remove the pinned XDP links (XDP leaves the
    /// interfaces; the maps and their sessions stay pinned). Run it after
    /// stopping the agent, to stop routing players.
    Detach {
        /// The agent's config (for its `bpffs`).
        #[arg(long, short, conflicts_with = "bpffs")]
        config: Option<PathBuf>,
        /// The bpffs folder instead of a config.
        #[arg(long)]
        bpffs: Option<PathBuf>,
    },
    /// Frontends, shards (role, players, capacity), totals and counters.
    Status(Target),
    /// The shards table.
    Shards(Target),
    /// Players' sessions, optionally of one shard or one client.
    Sessions {
        #[arg(long)]
        shard: Option<String>,
        /// IP or IP:PORT.
        #[arg(long)]
        client: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Move players by silent re-routing: chosen clients, or every player of a shard together.
    Migrate {
        /// A player as IP (every port) or IP:PORT; repeat for several.
        #[arg(long = "client", required_unless_present = "from", conflicts_with = "from")]
        clients: Vec<String>,
        /// Move every player of this shard, as one group.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        target: Target,
    },
    /// No new players for this shard; its players stay unless moved.
    Drain {
        shard: String,
        #[command(flatten)]
        target: Target,
    },
    /// Take new players again.
    Undrain {
        shard: String,
        #[command(flatten)]
        target: Target,
    },
    /// Re-read the config file (as SIGHUP does).
    Reload(Target),
    /// Health changes, failovers and migrations, oldest first.
    Events(Target),
    /// The account-lease database (`leases:` in the config).
    #[command(subcommand)]
    Db(DbCommand),
    /// Move every player of a shard to ONE other shard now, as a health failure would.
    Failover {
        shard: String,
        /// The target; by default an empty standby, else the shard with the most room.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply the missing schema versions (tables, procedures) and write the
    /// lease time; safe to run again. The database URL comes from
    /// SAMP_PROXY_DATABASE_URL or `leases.database`.
    Migrate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn db(cmd: DbCommand) -> anyhow::Result<()> {
    let DbCommand::Migrate { config: path } = cmd;
    let cfg = config::load(&path)?;
    // Without a `leases:` block the defaults apply and the URL must come
    // from the environment; `connect` says so when it does not.
    let leases = cfg.raw.leases.unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = proxy_agent::leases::LeaseStore::connect(&leases).await?;
        let result = async {
            let applied = store.migrate().await?;
            let version = store.schema_version().await?;
            Ok::<_, anyhow::Error>((applied, version))
        }
        .await;
        let _ = store.close().await;
        let (applied, version) = result?;
        if applied.is_empty() {
            println!("already at version {version}; lease_seconds {}", leases.lease_seconds);
        } else {
            let list: Vec<String> = applied.iter().map(u32::to_string).collect();
            println!(
                "schema at version {version}; applied: {}; lease_seconds {}",
                list.join(", "),
                leases.lease_seconds
            );
        }
        Ok(())
    })
}

fn init_logging(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    env_logger::Builder::from_env(env).format_target(false).init();
}

fn socket_of(t: &Target) -> anyhow::Result<PathBuf> {
    if let Some(s) = &t.socket {
        return Ok(s.clone());
    }
    if let Some(c) = &t.config {
        return Ok(config::load(c)?.raw.control_socket);
    }
    Ok(config::default_control_socket())
}

fn remote(req: Request, t: &Target) -> anyhow::Result<()> {
    let data = cli::send(&socket_of(t)?, &req)?;
    if t.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        cli::print_human(&req, &data)?;
    }
    Ok(())
}

fn detach(config: Option<PathBuf>, bpffs: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match (config, bpffs) {
        (_, Some(dir)) => dir,
        (Some(c), None) => config::load(&c)?.raw.bpffs,
        (None, None) => anyhow::bail!("say which data plane: --config FILE (its `bpffs`) or --bpffs DIR"),
    };
    let gone = proxy_agent::dataplane::links::detach_all(&dir)?;
    if gone.is_empty() {
        println!("nothing attached from {}", dir.display());
    } else {
        println!("detached from {}; the maps stay pinned in {}", gone.join(", "), dir.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Check { config } => config::load(&config)
            .map(|cfg| {
                println!("{}: ok", config.display());
                for fe in &cfg.frontends {
                    println!("frontend {} {}", fe.name, fe.address);
                }
                for s in &cfg.shards {
                    println!(
                        "shard {} {} capacity {} {:?} -> {}",
                        s.name, s.address, s.capacity, s.role, cfg.frontends[s.frontend].name
                    );
                }
                if let Some(l) = &cfg.raw.leases {
                    let db = l.database.as_deref().map(proxy_agent::leases::redact);
                    println!(
                        "leases {} lease_seconds {}",
                        db.unwrap_or_else(|| format!("from {}", proxy_agent::leases::DATABASE_ENV)),
                        l.lease_seconds
                    );
                }
            })
            .map_err(anyhow::Error::from),
        Command::Run { config: path, xdp_object } => {
            let level = config::load(&path).map(|c| c.raw.log_level).unwrap_or_else(|_| "info".into());
            init_logging(&level);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run::run(&path, xdp_object.as_deref())))
        }
        Command::Detach { config, bpffs } => detach(config, bpffs),
        Command::Status(t) => remote(Request::Status, &t),
        Command::Shards(t) => remote(Request::Shards, &t),
        Command::Sessions { shard, client, target } => remote(Request::Sessions { shard, client }, &target),
        Command::Migrate { clients, from, to, target } => remote(Request::Migrate { clients, from, to }, &target),
        Command::Drain { shard, target } => remote(Request::Drain { shard }, &target),
        Command::Undrain { shard, target } => remote(Request::Undrain { shard }, &target),
        Command::Reload(t) => remote(Request::Reload, &t),
        Command::Events(t) => remote(Request::Events, &t),
        Command::Db(cmd) => db(cmd),
        Command::Failover { shard, to, target } => remote(Request::Failover { shard, to }, &target),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
