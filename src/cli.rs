//! The command line: `serve` (default), `check`, `policy explain`, `token`, `simulate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::auth::{Authenticator, DevClaims, mint_dev_token};
use crate::config::Settings;
use crate::domain::{Purpose, Role};
use crate::policy::{Policy, run_policy_tests};
use crate::simulator::{Dataset, SimulatorOptions};
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(
    name = "caf-broker",
    version,
    about = "A purpose-bound access broker to CAF dossiers"
)]
pub struct Cli {
    /// The broker's configuration file.
    #[arg(long, global = true, default_value = "config/broker.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (the default command).
    Serve,
    /// Validate the configuration and the policy, and run the policy tests.
    Check,
    /// Inspect the policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a signed development token (needs auth.dev_signing_key_file).
    Token {
        #[arg(long)]
        post: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        sub: String,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Run the CAF simulator as a standalone HTTP server.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:8600")]
        listen: SocketAddr,
        #[arg(long, default_value_t = Dataset::DEFAULT_SEED)]
        seed: u64,
        #[arg(long, default_value_t = Dataset::DEFAULT_RECORDS)]
        records: usize,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show which fields a role sees for a purpose, with each transform, or why it is refused.
    Explain {
        #[arg(long)]
        role: String,
        #[arg(long)]
        purpose: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs the command; errors are printed by the caller, with their chain.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config).await,
        Command::Check => Ok(check(&cli.config)),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    role,
                    purpose,
                    format,
                },
        } => explain(&cli.config, &role, &purpose, format),
        Command::Token {
            post,
            role,
            sub,
            ttl_secs,
        } => {
            let settings = Settings::load(&cli.config)?;
            let token = mint_dev_token(
                &settings.auth,
                DevClaims {
                    sub,
                    post,
                    role,
                    ttl_secs,
                },
            )?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            listen,
            seed,
            records,
            latency_ms,
            fail_rate,
        } => {
            crate::telemetry::init(&Default::default());
            let options = SimulatorOptions {
                listen,
                seed,
                records,
                latency_ms,
                fail_rate,
            };
            let simulator = crate::simulator::start(options).await?;
            // Printed on stdout so that scripts and tests can find a port chosen with :0.
            println!("CAF simulator listening on {}", simulator.local_addr());
            simulator.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config)?;
    crate::telemetry::init(&settings.telemetry);
    let app = Application::build(settings).await?;
    tracing::info!(
        port = app.port(),
        scheme = app.scheme(),
        "caf-broker listening"
    );
    app.run_until_stopped().await.context("serving")?;
    Ok(ExitCode::SUCCESS)
}

/// Loads everything a running broker would load and reports every problem.
fn check(config: &Path) -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    let settings = match Settings::load(config) {
        Ok(settings) => settings,
        Err(e) => {
            print_problems(&e.problems);
            return ExitCode::FAILURE;
        }
    };
    crate::auth::install_crypto_provider();
    if let Err(e) = Authenticator::new(&settings.auth) {
        problems.push(e.to_string());
    }
    if settings.server.tls
        && let (Some(cert), Some(key)) = (
            &settings.server.tls_cert_file,
            &settings.server.tls_key_file,
        )
        && let Err(e) = crate::tls::server_config(cert, key)
    {
        problems.push(format!("server: {e}"));
    }
    match Policy::from_file(&settings.policy.file) {
        Err(e) => problems.extend(e.problems.iter().map(|p| p.to_string())),
        Ok(policy) => {
            for warning in policy.warnings() {
                println!("warning: {warning}");
            }
            if let Some(dir) = &settings.policy.tests_dir {
                match run_policy_tests(&policy, dir) {
                    Err(e) => problems.extend(e.problems.iter().map(|p| p.to_string())),
                    Ok(report) => {
                        println!("{report}");
                        problems.extend(report.failures.iter().map(|f| f.to_string()));
                    }
                }
            }
            println!("policy {} loaded", policy.version());
        }
    }
    if problems.is_empty() {
        println!("ok: {} is valid", config.display());
        ExitCode::SUCCESS
    } else {
        print_problems(&problems);
        ExitCode::FAILURE
    }
}

fn print_problems(problems: &[String]) {
    eprintln!("{} problem(s) found:", problems.len());
    for problem in problems {
        eprintln!("  {problem}");
    }
}

/// Exits 0 when the role may declare the purpose, 1 when the pair is refused.
fn explain(config: &Path, role: &str, purpose: &str, format: Format) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config)?;
    let policy = Policy::from_file(&settings.policy.file)?;
    let role = Role::parse(role).context("--role")?;
    let purpose = Purpose::parse(purpose).context("--purpose")?;
    let explanation = policy.explain(&role, &purpose);
    match format {
        Format::Text => println!("{explanation}"),
        Format::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
    }
    Ok(if policy.authorize(&role, &purpose).is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
