//! `proxy-agent`: the agent (`run`) and the operator's CLI.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use proxy_agent::{config, run};

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

#[derive(Subcommand)]
enum Command {
    /// Load the XDP data plane, attach it and keep it in line with the config.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and print what it describes; changes nothing.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logging(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    env_logger::Builder::from_env(env)
        .format_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
            })
            .map_err(anyhow::Error::from),
        Command::Run { config: path } => {
            let level = config::load(&path)
                .map(|c| c.raw.log_level)
                .unwrap_or_else(|_| "info".into());
            init_logging(&level);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run::run(&path)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
