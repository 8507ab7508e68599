//! The command line: `serve` (default), `check`, `policy explain`, `token`, `audit`, `simulate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::auth::{DevClaims, mint_bound_dev_token_at, mint_dev_token};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::domain::{Purpose, Role};
use crate::policy::Policy;
use crate::simulator::{Dataset, SimulatorOptions};
use crate::startup::{Application, Components, Problems};

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
    /// Build everything `serve` builds except the listener, and print every problem.
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
        /// Bind the token to this PEM client certificate (RFC 8705 `cnf.x5t#S256`):
        /// the broker then accepts it only over TLS with that certificate.
        #[arg(long, value_name = "FILE")]
        bind_cert: Option<PathBuf>,
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
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert.
        #[arg(long)]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this CA (mTLS; needs --tls-cert).
        #[arg(long)]
        client_ca: Option<PathBuf>,
    },
    /// Verify the audit logs' hash chains, list the accesses to one dossier, or report them to its data subject.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every log: its hash chain and, with --public-key, its Merkle tree
    /// against the signed checkpoints: print the records checked, the tree size
    /// and root, or name what is wrong and exit 1.
    Verify {
        /// Audit directories, each holding a log or one log per replica
        /// subdirectory; or audit files verified as a slice of one chain
        /// (default: audit.dir of the configuration).
        paths: Vec<PathBuf>,
        /// The checkpoint signing key's public half (PEM, or a C2SP verifier
        /// key): the tree is recomputed and checked against every signed checkpoint.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// A signed checkpoint kept elsewhere (e.g. by a witness), checked too;
        /// the log must hold at least the records it covers.
        #[arg(long, requires = "public_key")]
        checkpoint: Option<PathBuf>,
        /// The log's origin (default: audit.log_origin of the configuration).
        #[arg(long, requires = "public_key")]
        origin: Option<String>,
    },
    /// Print every recorded access to one dossier, as JSON lines, under every key and in every log.
    Search {
        #[command(flatten)]
        dossier: DossierArgs,
        /// An audit directory to search (a log, or one per replica
        /// subdirectory); repeat for several (default: audit.dir).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// A data subject's access report (GDPR art. 15): every access to one dossier, on standard output.
    Report {
        #[command(flatten)]
        dossier: DossierArgs,
        #[arg(long, value_enum)]
        format: ReportFormat,
        /// Name the agent (`sub`) of each access.
        #[arg(long)]
        include_agents: bool,
        /// An audit directory to read (a log, or one per replica
        /// subdirectory); repeat for several (default: audit.dir).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// For every access to one dossier, print the record, its leaf index and
    /// its inclusion proof against the log's latest signed checkpoint: one
    /// JSON document per line (docs/audit-proofs.md).
    Prove {
        #[command(flatten)]
        dossier: DossierArgs,
        /// An audit directory to read (a log, or one per replica
        /// subdirectory); repeat for several (default: audit.dir).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// Check one proof printed by `audit prove`, offline, with the checkpoint
    /// key's public half only; exit 1 naming what does not hold.
    VerifyProof {
        /// The checkpoint signing key's public half (PEM, or a C2SP verifier key).
        #[arg(long)]
        public_key: PathBuf,
        /// The log's origin (default: the verifier key's name, or audit.log_origin).
        #[arg(long)]
        origin: Option<String>,
        /// A file holding one proof document.
        proof_file: PathBuf,
    },
    /// Prove, from the log, that the NEW signed checkpoint extends the OLD
    /// one (what a witness runs); exit 1 on a rolled-back or forked log.
    Consistency {
        /// The checkpoint signing key's public half (PEM, or a C2SP verifier key).
        #[arg(long)]
        public_key: PathBuf,
        /// The log's origin (default: the verifier key's name, or audit.log_origin).
        #[arg(long)]
        origin: Option<String>,
        /// The directory of the one log both checkpoints sign (default: audit.dir).
        #[arg(long = "dir", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// A file holding the earlier signed checkpoint note.
        old: PathBuf,
        /// A file holding the later signed checkpoint note.
        new: PathBuf,
    },
}

/// The dossier a search or report is about.
#[derive(Debug, clap::Args)]
pub struct DossierArgs {
    #[arg(long, conflicts_with = "nir", required_unless_present = "nir")]
    numero: Option<String>,
    /// The NIR, or `-` to read it from standard input (out of the process list and shell history).
    #[arg(long)]
    nir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Html,
    Json,
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
        Command::Check => Ok(check(&cli.config).await),
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
            bind_cert,
        } => {
            let settings = Settings::load(&cli.config)?;
            if !crate::production::is_development(&settings.environment) {
                anyhow::bail!(
                    "token: development tokens are minted in dev and test only, and environment is {:?}",
                    settings.environment
                );
            }
            let claims = DevClaims {
                sub,
                post,
                role,
                ttl_secs,
            };
            let token = match bind_cert {
                None => mint_dev_token(&settings.auth, claims)?,
                Some(file) => {
                    // The leaf: the first certificate of the file.
                    let leaf = crate::tls::certificates(&file)?.swap_remove(0);
                    let thumbprint = crate::tls::ClientCertificate::new(leaf).thumbprint();
                    mint_bound_dev_token_at(&settings.auth, claims, thumbprint, &SystemClock)?
                }
            };
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit(&cli.config, command),
        Command::Simulate {
            listen,
            seed,
            records,
            latency_ms,
            fail_rate,
            tls_cert,
            tls_key,
            client_ca,
        } => {
            let _telemetry = crate::telemetry::init(&Default::default())?;
            let options = SimulatorOptions {
                listen,
                seed,
                records,
                latency_ms,
                fail_rate,
                tls_cert_file: tls_cert,
                tls_key_file: tls_key,
                client_ca_file: client_ca,
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
    // Held until the server stops, so that spans are flushed on shutdown.
    let _telemetry = crate::telemetry::init(&settings.telemetry)?;
    let app = Application::build(settings).await?;
    tracing::info!(
        port = app.port(),
        scheme = app.scheme(),
        ops_port = app.ops_port(),
        ops_scheme = app.ops_scheme(),
        "caf-broker listening"
    );
    app.run_until_stopped().await.context("serving")?;
    Ok(ExitCode::SUCCESS)
}

/// Builds everything `serve` builds except the listener, the audit writer and
/// the telemetry it would install, and reports every problem. Nothing is bound,
/// served, locked or written: it may run beside the broker it checks.
async fn check(config: &Path) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(settings) => settings,
        Err(e) => {
            print_problems(&e.problems);
            return ExitCode::FAILURE;
        }
    };
    // With a JWKS URL this fetches it, so that check also proves it answers.
    let built = Components::build(&settings, Arc::new(SystemClock)).await;
    // The exporter is built (no collector needed), not installed.
    let exporter = crate::telemetry::check_exporter(&settings.telemetry);
    let mut problems = match built {
        Ok(components) => {
            describe(&components, &settings);
            Vec::new()
        }
        Err(Problems(problems)) => problems,
    };
    if let Err(e) = exporter {
        problems.push(match e.to_string() {
            m if m.starts_with("telemetry.") => m,
            m => format!("telemetry.otlp_endpoint: {m}"),
        });
    }
    if problems.is_empty() {
        println!("ok: {} is valid", config.display());
        ExitCode::SUCCESS
    } else {
        print_problems(&problems);
        ExitCode::FAILURE
    }
}

/// What `check` found sound: the policies' versions and warnings.
fn describe(components: &Components, settings: &Settings) {
    for warning in &components.warnings {
        println!("warning: {warning}");
    }
    let policy = components.policy.current();
    for warning in policy.warnings() {
        println!("warning: {warning}");
    }
    match &settings.policy.tests_dir {
        Some(dir) => println!(
            "policy {} loaded; its tests in {} pass",
            policy.version(),
            dir.display()
        ),
        None => println!("policy {} loaded", policy.version()),
    }
    if let Some(shadow) = &components.shadow {
        for warning in shadow.policy().warnings() {
            println!("warning: shadow: {warning}");
        }
        println!("shadow policy {} loaded", shadow.policy().version());
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

fn audit(config: &Path, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            paths,
            public_key: Some(public_key),
            checkpoint,
            origin,
        } => audit_verify_signed(config, &paths, &public_key, checkpoint, origin),
        AuditCommand::Verify { paths, .. } => audit_verify(config, &paths),
        AuditCommand::Search { dossier, dirs } => audit_search(config, dossier, &dirs),
        AuditCommand::Report {
            dossier,
            format,
            include_agents,
            dirs,
        } => audit_report(config, dossier, format, include_agents, &dirs),
        AuditCommand::Prove { dossier, dirs } => audit_prove(config, dossier, &dirs),
        AuditCommand::VerifyProof {
            public_key,
            origin,
            proof_file,
        } => audit_verify_proof(config, &public_key, origin, &proof_file),
        AuditCommand::Consistency {
            public_key,
            origin,
            dir,
            old,
            new,
        } => audit_consistency(config, &public_key, origin, dir, &old, &new),
    }
}

/// Exits 0 when every log's chain is sound, 1 naming each log's first bad
/// record. Files or directories others may read are warned about.
fn audit_verify(config: &Path, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use crate::audit::{VerifyError, loose_modes, verify_dir, verify_files};
    let paths = match paths {
        [] => vec![Settings::load(config)?.audit.dir],
        paths => paths.to_vec(),
    };
    let dirs = paths.iter().filter(|p| p.is_dir()).count();
    if dirs == 0 {
        return print_verified(None, verify_files(&paths));
    }
    if dirs < paths.len() {
        anyhow::bail!("give either audit directories or audit files, not both");
    }
    let logs = logs_of(&paths)?;
    let mut code = ExitCode::SUCCESS;
    for log in &logs {
        let named = (logs.len() > 1).then(|| log.label());
        for warning in loose_modes(&log.path).unwrap_or_default() {
            eprintln!("warning: {warning}");
        }
        let result: Result<_, VerifyError> = verify_dir(&log.path);
        if print_verified(named.as_deref(), result)? != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
        if log.path.join(crate::audit::CHECKPOINTS_FILE).exists() {
            let prefix = named
                .as_deref()
                .map(|n| format!("{n}: "))
                .unwrap_or_default();
            eprintln!(
                "warning: {prefix}only the hash chain was checked; give the checkpoint key's public half (--public-key) to check the signed tree, which also shows a recomputed chain or a cut log"
            );
        }
    }
    Ok(code)
}

/// Prints one log's verdict, prefixed with its name when several are verified.
fn print_verified(
    name: Option<&str>,
    result: Result<crate::audit::VerifyReport, crate::audit::VerifyError>,
) -> anyhow::Result<ExitCode> {
    use crate::audit::VerifyError;
    let prefix = name.map(|n| format!("{n}: ")).unwrap_or_default();
    match result {
        Ok(report) => {
            for warning in &report.warnings {
                eprintln!("warning: {prefix}{warning}");
            }
            println!("{prefix}{report}");
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Bad(bad)) => {
            println!(
                "{prefix}{} records checked before the first bad record",
                bad.checked
            );
            eprintln!("error: {prefix}first bad record: {bad}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// Exits 0 when every log's chain is sound and its tree matches every signed
/// checkpoint; 1 naming, for each log, the first bad record or the forgery.
fn audit_verify_signed(
    config: &Path,
    paths: &[PathBuf],
    public_key: &Path,
    checkpoint: Option<PathBuf>,
    origin: Option<String>,
) -> anyhow::Result<ExitCode> {
    use crate::audit::{CheckpointVerifier, VerifyError, verify_signed};
    let (dirs, origin) = match (paths, origin) {
        ([_, ..], Some(origin)) => (paths.to_vec(), Some(origin)),
        (_, origin) => {
            let settings = Settings::load(config)?;
            let dirs = match paths {
                [] => vec![settings.audit.dir],
                paths => paths.to_vec(),
            };
            (dirs, origin.or(settings.audit.log_origin))
        }
    };
    if let Some(file) = dirs.iter().find(|d| !d.is_dir()) {
        anyhow::bail!(
            "{}: --public-key verifies whole audit directories (their trees and checkpoints), not files",
            file.display()
        );
    }
    let verifier = CheckpointVerifier::from_file(public_key, origin.as_deref())
        .map_err(|problem| anyhow::anyhow!("{}: {problem}", public_key.display()))?;
    let given = match &checkpoint {
        Some(file) => {
            Some(std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?)
        }
        None => None,
    };
    let logs = logs_of(&dirs)?;
    if given.is_some() && logs.len() > 1 {
        anyhow::bail!("--checkpoint is one log's checkpoint: name that replica's directory alone");
    }
    let mut code = ExitCode::SUCCESS;
    for log in &logs {
        let prefix = if logs.len() > 1 {
            format!("{}: ", log.label())
        } else {
            String::new()
        };
        for warning in crate::audit::loose_modes(&log.path).unwrap_or_default() {
            eprintln!("warning: {warning}");
        }
        match verify_signed(&log.path, &verifier, given.as_deref()) {
            Ok(report) => {
                for warning in &report.chain.warnings {
                    eprintln!("warning: {prefix}{warning}");
                }
                println!("{prefix}{report}");
            }
            Err(VerifyError::Bad(bad)) => {
                println!(
                    "{prefix}{} records checked before the first bad record",
                    bad.checked
                );
                eprintln!("error: {prefix}first bad record: {bad}");
                code = ExitCode::FAILURE;
            }
            Err(VerifyError::Tree(defect)) => {
                eprintln!("error: {prefix}{defect}");
                code = ExitCode::FAILURE;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}

/// The logs under each directory (a directory without any is an empty log
/// of its own); warns when a directory of replicas lets others in.
fn logs_of(dirs: &[PathBuf]) -> anyhow::Result<Vec<crate::audit::LogDir>> {
    use crate::audit::{LogDir, logs_under, loose_modes};
    let mut logs = Vec::new();
    for dir in dirs {
        let found = logs_under(dir).with_context(|| format!("{}: cannot read", dir.display()))?;
        match found.first() {
            // An empty directory is an empty log: 0 records, as before replicas.
            None => logs.push(LogDir {
                replica: None,
                path: dir.clone(),
            }),
            // The directory of the replicas: its own mode matters too.
            Some(log) if log.replica.is_some() => {
                for warning in loose_modes(dir).unwrap_or_default() {
                    eprintln!("warning: {warning}");
                }
            }
            Some(_) => {}
        }
        logs.extend(found);
    }
    Ok(logs)
}

/// The lookup named on the command line; a NIR given as `-` is read from standard input.
fn read_lookup(dossier: DossierArgs) -> anyhow::Result<crate::domain::Lookup> {
    use crate::domain::{Lookup, Nir, NumeroAllocataire};
    match (dossier.numero, dossier.nir) {
        (Some(numero), None) => Ok(Lookup::Numero(
            NumeroAllocataire::parse(&numero).context("--numero")?,
        )),
        (None, Some(nir)) => {
            let mut nir = nir;
            if nir == "-" {
                nir.clear();
                std::io::stdin()
                    .read_line(&mut nir)
                    .context("reading the NIR from standard input")?;
            }
            Ok(Lookup::Nir(Nir::parse(nir.trim()).context("--nir")?))
        }
        _ => anyhow::bail!("give exactly one of --numero or --nir"),
    }
}

/// Every record of the dossier in the logs under `dirs` (default: audit.dir),
/// under every key of the configuration.
fn find_accesses(
    config: &Path,
    dossier: DossierArgs,
    dirs: &[PathBuf],
) -> anyhow::Result<(
    Vec<crate::audit::LogDir>,
    Vec<crate::audit::Found>,
    crate::audit::SearchResult,
)> {
    let lookup = read_lookup(dossier)?;
    let settings = Settings::load(config)?;
    let keys = crate::audit::AuditKey::all_from_settings(&settings.audit).map_err(|problems| {
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(problems.join("; "))
    })?;
    let dirs = match dirs {
        [] => vec![settings.audit.dir.clone()],
        dirs => dirs.to_vec(),
    };
    let mut logs = Vec::new();
    for dir in &dirs {
        logs.extend(
            crate::audit::logs_under(dir)
                .with_context(|| format!("{}: cannot read", dir.display()))?,
        );
    }
    let (found, result) = crate::audit::search_logs(&logs, &keys, &lookup)?;
    Ok((logs, found, result))
}

/// Prints the matching records on stdout, one JSON object per line; the count on stderr.
fn audit_search(config: &Path, dossier: DossierArgs, dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let (logs, _, found) = find_accesses(config, dossier, dirs)?;
    let mut out = std::io::stdout().lock();
    for record in &found.records {
        serde_json::to_writer(&mut out, record)?;
        writeln!(out)?;
    }
    out.flush()?;
    eprintln!(
        "{} record(s) found in {} file(s) of {} log(s)",
        found.records.len(),
        found.files,
        logs.len()
    );
    warn_unreadable(&found);
    Ok(ExitCode::SUCCESS)
}

/// Writes the access report on stdout; the count on stderr.
fn audit_report(
    config: &Path,
    dossier: DossierArgs,
    format: ReportFormat,
    include_agents: bool,
    dirs: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let (logs, found, result) = find_accesses(config, dossier, dirs)?;
    let now = crate::clock::Clock::wall(&SystemClock)
        .round(jiff::Unit::Second)?
        .to_string();
    let mut report = crate::audit::AccessReport::build(&found, &logs, include_agents, now);
    // Each log's accesses are proven against its latest signed checkpoint.
    for (log, entry) in logs.iter().zip(report.logs.iter_mut()) {
        let last_seq = found
            .iter()
            .filter(|f| f.replica == log.replica)
            .map(|f| f.record.seq)
            .max()
            .unwrap_or(0);
        match crate::audit::proven_checkpoint(&log.path, last_seq) {
            Ok(checkpoint) => entry.checkpoint = checkpoint,
            Err(e) => eprintln!("warning: not proven against a signed checkpoint: {e}"),
        }
    }
    let text = match format {
        ReportFormat::Html => report.to_html(),
        ReportFormat::Json => report.to_json() + "\n",
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    eprintln!(
        "{} access(es) reported from {} log(s)",
        found.len(),
        logs.len()
    );
    warn_unreadable(&result);
    Ok(ExitCode::SUCCESS)
}

fn warn_unreadable(found: &crate::audit::SearchResult) {
    if found.unreadable_lines > 0 {
        eprintln!(
            "warning: {} damaged line(s) mention this dossier; run `caf-broker audit verify`",
            found.unreadable_lines
        );
    }
}

/// Prints one inclusion proof per access to the dossier, one JSON document a
/// line, on stdout; the count, and the accesses no checkpoint covers yet, on stderr.
fn audit_prove(config: &Path, dossier: DossierArgs, dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let lookup = read_lookup(dossier)?;
    let settings = Settings::load(config)?;
    let keys = crate::audit::AuditKey::all_from_settings(&settings.audit).map_err(|problems| {
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(problems.join("; "))
    })?;
    let dossiers: Vec<String> = keys.iter().map(|key| key.pseudonymize(&lookup)).collect();
    let dirs = match dirs {
        [] => vec![settings.audit.dir.clone()],
        dirs => dirs.to_vec(),
    };
    let logs = logs_of(&dirs)?;
    let mut out = std::io::stdout().lock();
    let mut proven = 0;
    for log in &logs {
        let (proofs, uncovered) =
            crate::audit::prove_records(&log.path, log.replica.as_deref(), &dossiers)?;
        for proof in &proofs {
            serde_json::to_writer(&mut out, proof)?;
            writeln!(out)?;
        }
        proven += proofs.len();
        if !uncovered.is_empty() {
            eprintln!(
                "warning: {}: {} access(es) written after the latest signed checkpoint cannot be proven yet (seq {:?})",
                log.label(),
                uncovered.len(),
                uncovered
            );
        }
    }
    out.flush()?;
    eprintln!("{proven} access(es) proven in {} log(s)", logs.len());
    Ok(ExitCode::SUCCESS)
}

/// The verifier of `--public-key`: its origin is `--origin`, else the name
/// a C2SP verifier key carries, else audit.log_origin when a configuration
/// can be read (none is needed offline).
fn checkpoint_verifier(
    config: &Path,
    public_key: &Path,
    origin: Option<String>,
) -> anyhow::Result<crate::audit::CheckpointVerifier> {
    use crate::audit::CheckpointVerifier;
    let verifier =
        match origin {
            Some(origin) => CheckpointVerifier::from_file(public_key, Some(&origin)),
            None => CheckpointVerifier::from_file(public_key, None).or_else(|problem| {
                match Settings::load(config).ok().and_then(|s| s.audit.log_origin) {
                    Some(origin) => CheckpointVerifier::from_file(public_key, Some(&origin)),
                    None => Err(problem),
                }
            }),
        };
    verifier.map_err(|problem| anyhow::anyhow!("{}: {problem}", public_key.display()))
}

/// Exits 0 when the proof holds, 1 naming why it does not.
fn audit_verify_proof(
    config: &Path,
    public_key: &Path,
    origin: Option<String>,
    proof_file: &Path,
) -> anyhow::Result<ExitCode> {
    let verifier = checkpoint_verifier(config, public_key, origin)?;
    let document =
        std::fs::read(proof_file).with_context(|| format!("{}", proof_file.display()))?;
    match crate::audit::check_inclusion_proof(&document, &verifier) {
        Ok(leaf) => {
            println!(
                "ok: the record is leaf {} of the tree of size {} signed by {} (root {})",
                leaf.leaf_index, leaf.tree_size, leaf.origin, leaf.root
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(defect) => {
            eprintln!("error: {}: {defect}", proof_file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Exits 0, printing the proof, when NEW extends OLD in the log; 1 naming
/// the rollback or the fork.
fn audit_consistency(
    config: &Path,
    public_key: &Path,
    origin: Option<String>,
    dir: Option<PathBuf>,
    old: &Path,
    new: &Path,
) -> anyhow::Result<ExitCode> {
    let verifier = checkpoint_verifier(config, public_key, origin)?;
    let dir = match dir {
        Some(dir) => dir,
        None => Settings::load(config)?.audit.dir,
    };
    let logs = logs_of(std::slice::from_ref(&dir))?;
    let [log] = logs.as_slice() else {
        anyhow::bail!(
            "{}: holds {} logs; give the directory of the one log the checkpoints sign",
            dir.display(),
            logs.len()
        );
    };
    let read = |file: &Path| std::fs::read(file).with_context(|| format!("{}", file.display()));
    let (old_note, new_note) = (read(old)?, read(new)?);
    match crate::audit::prove_consistency(&log.path, &verifier, &old_note, &new_note) {
        Ok(proof) => {
            println!(
                "ok: the checkpoint of size {} extends the one of size {} (root {})",
                proof.new_size, proof.old_size, proof.new_root
            );
            for hash in &proof.proof {
                println!("{hash}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(crate::audit::ConsistencyDefect::Log(e)) => Err(e.into()),
        Err(defect) => {
            eprintln!("error: {defect}");
            Ok(ExitCode::FAILURE)
        }
    }
}
