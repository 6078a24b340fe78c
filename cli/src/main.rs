//! `ocx`: the OCX command line. Parses flags, connects, makes one SDK call (or a few, for
//! batches and pages), prints the result.
//!
//! Exit codes: 0 success; 1 some rows or numbers of a batch were rejected; 2 any error (bad
//! flags, connection, or a status from the server), printed to stderr as `error: <code>:
//! <message>` followed by one `  <field>: <description>` line per field violation.
//!
//! ## Layout
//! - this file: the flags (clap derive), key loading, dispatch and error printing.
//! - `values`: flag value checks with the contract's validators (E.164, tenant id, times).
//! - `output`: tables, JSON lines, the flat CSV form of a call record, progress on stderr.
//! - `upload`: the CSV format of `numbers upload`, batching, and the per-row report.
//! - `calls`: the flags of `calls ...`, and `calls list`, `get` and `follow`.
//! - `export`: `calls export` (CSV or JSON lines, to a file or stdout).
//! - `generate`: `calls generate` (sample records through the streaming ingest).
//! - `durations`: the flags of `durations ...`, `reconcile ...` and `usage`, and those commands.
//! - `duration_upload`: the CSV format of `durations upload`, streaming it through the SDK's
//!   uploader, and the rejects file.

mod calls;
mod duration_upload;
mod durations;
mod export;
mod generate;
mod output;
mod quality;
mod upload;
mod values;

use std::io::{self, Write};
use std::path::PathBuf;
use std::pin::pin;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use ocx_client::{Client, pb};

use output::{Format, print_all, print_one};

/// Command-line client for OCX: carriers, API keys, consents, phone numbers, call records, call
/// durations, reconciliation and tenant usage.
#[derive(Debug, Parser)]
#[command(name = "ocx", version)]
struct Cli {
    /// Server address.
    #[arg(
        long,
        env = "OCX_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    endpoint: String,
    /// API key (the secret printed by `ocx keys create`). Wins over --key-file.
    #[arg(long, env = "OCX_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    /// File holding the API key (surrounding whitespace is ignored).
    #[arg(long, env = "OCX_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// How list and get commands print.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    /// CA certificate (PEM) to check a TLS server with; use an https:// endpoint.
    #[arg(long, env = "OCX_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require mutual TLS; needs --tls-key.
    #[arg(long, env = "OCX_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "OCX_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Carriers (platform key).
    #[command(subcommand)]
    Carriers(CarrierCommand),
    /// API keys (platform key).
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Tenants' consents to carriers.
    #[command(subcommand)]
    Consents(ConsentCommand),
    /// A carrier's phone numbers.
    #[command(subcommand)]
    Numbers(NumberCommand),
    /// Call records: list, show, export, follow the feed, generate sample data.
    #[command(subcommand)]
    Calls(calls::CallCommand),
    /// The call durations the carrier measured: upload from CSV, list.
    #[command(subcommand)]
    Durations(durations::DurationCommand),
    /// Compare the platform's call records with the carrier's durations over a period.
    #[command(subcommand)]
    Reconcile(durations::ReconcileCommand),
    /// A tenant's calls and summed durations over a period (platform key).
    Usage(durations::UsageArgs),
    /// Call quality and traffic figures per time bucket and group, as a table or a chart.
    #[command(subcommand)]
    Quality(quality::QualityCommand),
    /// How long personal data is kept, and purging what aged out (platform key).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Erase a tenant's personal data: call records, duration reports, SIP URIs and user ids
    /// of its numbers (platform key). Cannot be undone.
    Erase {
        /// The tenant's GUID.
        #[arg(long, value_parser = values::tenant_id)]
        tenant: String,
        /// Say yes: erasure cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Print a completion script for a shell, e.g. `ocx completions bash > /etc/bash_completion.d/ocx`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The audit trail, newest first (platform key).
    Audit {
        /// Only this key id.
        #[arg(long)]
        key_id: Option<String>,
        /// Only this carrier's keys.
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
        /// Only this method, e.g. ocx.v1.NumberService/GetNumber.
        #[arg(long)]
        rpc: Option<String>,
        /// Only events at or after this time (RFC 3339 UTC).
        #[arg(long, value_parser = values::rfc3339)]
        from: Option<prost_types::Timestamp>,
        /// Only events before this time (RFC 3339 UTC).
        #[arg(long, value_parser = values::rfc3339)]
        to: Option<prost_types::Timestamp>,
        /// Stop after this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Record that a number was assigned in its tenant (platform key).
    Assign(AssignArgs),
    /// Record that a number was unassigned (platform key).
    Unassign {
        /// The number, E.164.
        #[arg(value_parser = values::e164)]
        number: String,
        /// The tenant the number is provisioned to.
        #[arg(long, value_parser = values::tenant_id)]
        tenant: String,
    },
}

/// `ocx retention ...`
#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Show the policy in force.
    Get,
    /// Set every period, in days (1 to 3650; audit events at least 30).
    Set {
        /// Call records.
        #[arg(long)]
        call_records: i32,
        /// Carriers' duration reports.
        #[arg(long)]
        call_durations: i32,
        /// Released numbers and their events.
        #[arg(long)]
        released_numbers: i32,
        /// Audit events.
        #[arg(long)]
        audit_events: i32,
    },
    /// Delete now what the policy no longer allows, and say how much.
    Purge,
}

/// `ocx carriers ...`
#[derive(Debug, Subcommand)]
enum CarrierCommand {
    /// Register a carrier.
    Create {
        /// Carrier id: 3 to 63 of a-z, 0-9 and '-', starting with a letter.
        #[arg(value_parser = values::carrier_id)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List every carrier.
    List,
}

/// `ocx keys ...`
#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Issue a key; its secret is printed once.
    Create {
        /// Who the key speaks for.
        #[arg(long, value_enum)]
        role: Role,
        /// The carrier, for a carrier key.
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
        /// A label to tell keys apart.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this carrier's keys.
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key id (as listed).
        key_id: String,
    },
}

/// `--role`
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    /// The calling platform.
    Platform,
    /// One carrier.
    Carrier,
}

/// `ocx consents ...`
#[derive(Debug, Subcommand)]
enum ConsentCommand {
    /// List consents.
    List {
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
        /// Only consents with this status.
        #[arg(long, value_enum)]
        status: Option<ConsentStatus>,
    },
    /// Record or change a tenant's consent to a carrier (platform key).
    Grant {
        /// The carrier.
        #[arg(long, value_parser = values::carrier_id)]
        carrier: String,
        /// The tenant's GUID.
        #[arg(long, value_parser = values::tenant_id)]
        tenant: String,
        /// Countries whose numbers the tenant accepts (repeat, or separate with commas); none
        /// means any.
        #[arg(long = "country", value_delimiter = ',', value_parser = values::country_code)]
        countries: Vec<String>,
        /// The tenant contact's full name.
        #[arg(long)]
        contact_name: Option<String>,
        /// The tenant contact's e-mail address.
        #[arg(long)]
        contact_email: Option<String>,
        /// Record the consent as suspended rather than active.
        #[arg(long)]
        suspended: bool,
    },
    /// Mark a tenant's consent to a carrier removed (platform key).
    Revoke {
        /// The carrier.
        #[arg(long, value_parser = values::carrier_id)]
        carrier: String,
        /// The tenant's GUID.
        #[arg(long, value_parser = values::tenant_id)]
        tenant: String,
    },
}

/// `--status` of a consent.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConsentStatus {
    /// Consented.
    Active,
    /// Suspended by the platform.
    Suspended,
    /// Withdrawn by the tenant.
    Removed,
}

/// `ocx numbers ...`
#[derive(Debug, Subcommand)]
enum NumberCommand {
    /// Upload numbers from a CSV file.
    ///
    /// The file has a header row. Columns: number (required, E.164), tenant_id (may be empty or
    /// left out with --tenant), capabilities (';'-separated, e.g.
    /// inbound_calling;outbound_calling;user_assignment), civic_address_id, location_id,
    /// country_code. Rows go in batches of 1000; rejected rows are listed with their line, and
    /// the exit code is 1 if any was rejected.
    Upload {
        /// The CSV file ('-' for stdin).
        file: PathBuf,
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
        /// The tenant for rows whose tenant_id is empty or missing.
        #[arg(long, value_parser = values::tenant_id)]
        tenant: Option<String>,
    },
    /// List numbers (every page).
    List {
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
        /// Only this tenant's numbers.
        #[arg(long, value_parser = values::tenant_id)]
        tenant: Option<String>,
        /// Only numbers in this state.
        #[arg(long, value_enum)]
        state: Option<NumberState>,
        /// Only numbers changed at or after this time (RFC 3339 UTC, e.g. 2024-05-01T00:00:00Z).
        #[arg(long, value_parser = values::rfc3339)]
        updated_since: Option<prost_types::Timestamp>,
    },
    /// Show one number.
    Get {
        /// The number, E.164.
        #[arg(value_parser = values::e164)]
        number: String,
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
    },
    /// Release numbers from their tenants.
    Release {
        /// The numbers, E.164.
        #[arg(required = true, value_parser = values::e164)]
        numbers: Vec<String>,
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
    },
    /// Follow number events (reconnects by itself; stop with Ctrl-C).
    Watch {
        /// The carrier (required with a platform key).
        #[arg(long, value_parser = values::carrier_id)]
        carrier: Option<String>,
        /// Start after this sequence (0: from the beginning).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

/// `--state` of a number.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum NumberState {
    /// Uploaded, not assigned.
    Provisioned,
    /// Assigned in Teams.
    Assigned,
    /// Released by the carrier.
    Released,
}

/// `ocx assign ...`
#[derive(Debug, Args)]
struct AssignArgs {
    /// The number, E.164.
    #[arg(value_parser = values::e164)]
    number: String,
    /// The tenant the number is provisioned to.
    #[arg(long, value_parser = values::tenant_id)]
    tenant: String,
    /// What the number is assigned to.
    #[arg(long = "type", value_enum)]
    assignment_type: AssignmentType,
    /// SIP URI of the assignee, e.g. sip:alice@contoso.com.
    #[arg(long, value_parser = values::sip_uri)]
    sip_uri: String,
    /// Object id of the user or application.
    #[arg(long)]
    user_id: Option<String>,
}

/// `--type` of an assignment.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum AssignmentType {
    /// A Teams user.
    User,
    /// A conference bridge.
    Conference,
    /// An auto attendant or call queue.
    VoiceApplication,
    /// A third-party application.
    ThirdPartyApp,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OCX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

/// Prints an error on one line, `error: <CODE>: <message> [<field>: <description>; ...]`, with
/// the gRPC code by its canonical name; exit code 2.
fn report(error: &anyhow::Error) -> ExitCode {
    // `ocx numbers list | head`: the reader left, which is not a failure.
    if error
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    {
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(io::stderr().lock(), "error: {}", one_line(error));
    ExitCode::from(2)
}

/// The error's whole chain as one line; a server status by its code name, then its field
/// violations.
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = match cause.downcast_ref::<ocx_client::Error>() {
            Some(ocx_client::Error::Status {
                code,
                message,
                violations,
            }) => {
                let mut text = format!("{}: {message}", code_name(*code));
                let fields: Vec<String> = violations
                    .iter()
                    .filter(|v| !message.contains(&v.description))
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect();
                if !fields.is_empty() {
                    text.push_str(&format!(" [{}]", fields.join("; ")));
                }
                text
            }
            _ => cause.to_string(),
        };
        // tonic's transport error repeats itself down the chain ("transport error").
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// A gRPC code's canonical name, e.g. `INVALID_ARGUMENT`.
fn code_name(code: tonic::Code) -> String {
    let words = format!("{code:?}");
    let mut name = String::new();
    for (i, c) in words.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Connects with the configured key and runs the command.
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "ocx", &mut io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    let key = load_key(cli.key, cli.key_file)?;
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let tls = if cli.tls_ca.is_some() || cli.tls_cert.is_some() {
        let identity = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Some(ocx_client::TlsOptions {
            ca_pem: cli.tls_ca.as_ref().map(read).transpose()?,
            identity,
            domain: None,
        })
    } else {
        None
    };
    let client = Client::connect_tls(cli.endpoint, key, tls).await?;
    let format = cli.output;
    match cli.command {
        Command::Carriers(command) => carriers(&client, format, command).await?,
        Command::Keys(command) => keys(&client, format, command).await?,
        Command::Consents(command) => consents(&client, format, command).await?,
        Command::Numbers(command) => return numbers(&client, format, command).await,
        Command::Calls(command) => return calls::run(&client, format, command).await,
        Command::Durations(command) => {
            return durations::durations(&client, format, command).await;
        }
        Command::Reconcile(command) => durations::reconcile(&client, format, command).await?,
        Command::Usage(args) => durations::usage(&client, format, args).await?,
        Command::Quality(command) => quality::run(&client, format, command).await?,
        Command::Retention(command) => match command {
            RetentionCommand::Get => print_one(format, &client.get_retention_policy().await?)?,
            RetentionCommand::Set {
                call_records,
                call_durations,
                released_numbers,
                audit_events,
            } => {
                let policy = pb::RetentionPolicy {
                    call_record_days: call_records,
                    call_duration_days: call_durations,
                    released_number_days: released_numbers,
                    audit_event_days: audit_events,
                    update_time: None,
                };
                print_one(format, &client.set_retention_policy(policy).await?)?;
            }
            RetentionCommand::Purge => print_one(format, &client.purge_expired_data().await?)?,
        },
        Command::Completions { .. } => {}
        Command::Erase { tenant, yes } => {
            if !yes {
                anyhow::bail!(
                    "erasing tenant {tenant}'s personal data cannot be undone: add --yes to go on"
                );
            }
            print_one(format, &client.erase_tenant_data(&tenant).await?)?;
        }
        Command::Audit {
            key_id,
            carrier,
            rpc,
            from,
            to,
            limit,
        } => {
            let request = pb::ListAuditEventsRequest {
                key_id: key_id.unwrap_or_default(),
                carrier_id: carrier.unwrap_or_default(),
                rpc: rpc.unwrap_or_default(),
                start_time: from,
                end_time: to,
                page_size: limit.min(ocx_api::MAX_PAGE_SIZE as u32) as i32,
                page_token: String::new(),
            };
            print_all(format, client.audit_events(request).take(limit as usize)).await?;
        }
        Command::Assign(args) => {
            let request = pb::AssignNumberRequest {
                request_id: String::new(),
                number: args.number,
                tenant_id: args.tenant,
                assignment_type: match args.assignment_type {
                    AssignmentType::User => pb::AssignmentType::User,
                    AssignmentType::Conference => pb::AssignmentType::Conference,
                    AssignmentType::VoiceApplication => pb::AssignmentType::VoiceApplication,
                    AssignmentType::ThirdPartyApp => pb::AssignmentType::ThirdPartyApp,
                }
                .into(),
                sip_uri: args.sip_uri,
                user_id: args.user_id.unwrap_or_default(),
            };
            print_one(format, &client.assign_number(request).await?)?;
        }
        Command::Unassign { number, tenant } => {
            print_one(format, &client.unassign_number(&number, &tenant).await?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--key` if given, else the trimmed contents of `--key-file`.
fn load_key(key: Option<String>, key_file: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        return Ok(key);
    }
    let Some(path) = key_file else {
        anyhow::bail!("no API key: pass --key (or set OCX_KEY) or --key-file (or OCX_KEY_FILE)");
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// `ocx carriers ...`
async fn carriers(client: &Client, format: Format, command: CarrierCommand) -> anyhow::Result<()> {
    match command {
        CarrierCommand::Create { id, name } => {
            print_one(format, &client.create_carrier(&id, &name).await?)?;
        }
        CarrierCommand::List => print_all(format, client.carriers(Default::default())).await?,
    }
    Ok(())
}

/// `ocx keys ...`
async fn keys(client: &Client, format: Format, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            role,
            carrier,
            name,
        } => {
            let request = pb::CreateApiKeyRequest {
                request_id: String::new(),
                role: match role {
                    Role::Platform => pb::ApiKeyRole::Platform,
                    Role::Carrier => pb::ApiKeyRole::Carrier,
                }
                .into(),
                carrier_id: carrier.unwrap_or_default(),
                display_name: name.unwrap_or_default(),
            };
            let created = client.create_api_key(request).await?;
            let key = created.api_key.unwrap_or_default();
            let note =
                "The secret is shown only this once: store it now (use it as --key or OCX_KEY).";
            match format {
                Format::Json => {
                    let json = serde_json::json!({
                        "api_key": output::Render::json(&key),
                        "secret": created.secret,
                    });
                    writeln!(io::stdout().lock(), "{json}")?;
                    eprintln!("{note}");
                }
                Format::Table | Format::Csv => {
                    let mut out = io::stdout().lock();
                    writeln!(out, "key id:  {}", key.key_id)?;
                    writeln!(out, "secret:  {}", created.secret)?;
                    writeln!(out, "{note}")?;
                }
            }
        }
        KeyCommand::List { carrier } => {
            let request = pb::ListApiKeysRequest {
                carrier_id: carrier.unwrap_or_default(),
                ..Default::default()
            };
            print_all(format, client.api_keys(request)).await?;
        }
        KeyCommand::Revoke { key_id } => print_one(format, &client.revoke_api_key(&key_id).await?)?,
    }
    Ok(())
}

/// `ocx consents ...`
async fn consents(client: &Client, format: Format, command: ConsentCommand) -> anyhow::Result<()> {
    match command {
        ConsentCommand::List { carrier, status } => {
            let status = match status {
                None => pb::ConsentStatus::Unspecified,
                Some(ConsentStatus::Active) => pb::ConsentStatus::Active,
                Some(ConsentStatus::Suspended) => pb::ConsentStatus::Suspended,
                Some(ConsentStatus::Removed) => pb::ConsentStatus::Removed,
            };
            let request = pb::ListConsentsRequest {
                carrier_id: carrier.unwrap_or_default(),
                status: status.into(),
                ..Default::default()
            };
            print_all(format, client.consents(request)).await?;
        }
        ConsentCommand::Grant {
            carrier,
            tenant,
            countries,
            contact_name,
            contact_email,
            suspended,
        } => {
            let contact =
                (contact_name.is_some() || contact_email.is_some()).then(|| pb::Contact {
                    full_name: contact_name.unwrap_or_default(),
                    email: contact_email.unwrap_or_default(),
                    ..Default::default()
                });
            let status = if suspended {
                pb::ConsentStatus::Suspended
            } else {
                pb::ConsentStatus::Active
            };
            let request = pb::GrantConsentRequest {
                request_id: String::new(),
                carrier_id: carrier,
                tenant_id: tenant,
                consented_countries: countries,
                contact,
                status: status.into(),
            };
            print_one(format, &client.grant_consent(request).await?)?;
        }
        ConsentCommand::Revoke { carrier, tenant } => {
            print_one(format, &client.revoke_consent(&carrier, &tenant).await?)?;
        }
    }
    Ok(())
}

/// `ocx numbers ...`; exit code 1 when a batch had rejected items.
async fn numbers(
    client: &Client,
    format: Format,
    command: NumberCommand,
) -> anyhow::Result<ExitCode> {
    let all_accepted = match command {
        NumberCommand::Upload {
            file,
            carrier,
            tenant,
        } => {
            let parsed = if file.as_os_str() == "-" {
                upload::parse_csv(io::stdin().lock(), tenant.as_deref())
            } else {
                let reader = std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?;
                upload::parse_csv(reader, tenant.as_deref())
            }
            .with_context(|| format!("reading {}", file.display()))?;
            upload::upload(client, &carrier.unwrap_or_default(), parsed).await?
        }
        NumberCommand::Release { numbers, carrier } => {
            upload::release(client, &carrier.unwrap_or_default(), numbers).await?
        }
        NumberCommand::List {
            carrier,
            tenant,
            state,
            updated_since,
        } => {
            let state = match state {
                None => pb::NumberState::Unspecified,
                Some(NumberState::Provisioned) => pb::NumberState::Provisioned,
                Some(NumberState::Assigned) => pb::NumberState::Assigned,
                Some(NumberState::Released) => pb::NumberState::Released,
            };
            let request = pb::ListNumbersRequest {
                carrier_id: carrier.unwrap_or_default(),
                tenant_id: tenant.unwrap_or_default(),
                state: state.into(),
                updated_since,
                ..Default::default()
            };
            print_all(format, client.numbers(request)).await?;
            true
        }
        NumberCommand::Get { number, carrier } => {
            let number = client
                .get_number(&carrier.unwrap_or_default(), &number)
                .await?;
            print_one(format, &number)?;
            true
        }
        NumberCommand::Watch { carrier, after } => {
            let mut events = pin!(client.follow_number_events(&carrier.unwrap_or_default(), after));
            while let Some(event) = events.next().await {
                output::print_event(format, &event?)?;
            }
            true
        }
    };
    Ok(if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        <Cli as clap::CommandFactory>::command().debug_assert();
        let cli = Cli::try_parse_from([
            "ocx",
            "numbers",
            "list",
            "--state",
            "assigned",
            "--updated-since",
            "2024-05-01T00:00:00Z",
            "--output",
            "json",
            "--key",
            "k",
        ])
        .expect("valid flags");
        assert_eq!(cli.output, Format::Json);
        assert!(Cli::try_parse_from(["ocx", "numbers", "get", "0800"]).is_err());
    }

    #[test]
    fn call_flags_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(["ocx", "calls"].iter().chain(args));
        parse(&[
            "list",
            "--type",
            "voice-app-in",
            "--quality",
            "poor",
            "--limit",
            "5",
        ])
        .expect("list flags");
        parse(&[
            "list",
            "--from",
            "2024-05-01T00:00:00Z",
            "--direction",
            "inbound",
        ])
        .expect("time and direction");
        assert!(parse(&["list", "--limit", "0"]).is_err());
        assert!(parse(&["list", "--type", "user"]).is_err());
        parse(&[
            "export",
            "--since",
            "2024-05-01T00:00:00Z",
            "--until",
            "2024-06-01T00:00:00Z",
            "--format",
            "jsonl",
        ])
        .expect("export flags");
        assert!(
            parse(&[
                "export",
                "--since",
                "2024-05-01T00:00:00Z",
                "--format",
                "csv"
            ])
            .is_err()
        );
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let generate = [
            "generate",
            "--count",
            "10",
            "--tenant",
            tenant,
            "--number",
            "+442079460001",
        ];
        parse(&generate).expect("generate flags");
        assert!(parse(&[&generate[..], &["--batch", "1001"]].concat()).is_err());
        assert!(parse(&[&generate[..], &["--revise-percent", "101"]].concat()).is_err());
        assert!(parse(&["generate", "--count", "10", "--tenant", tenant]).is_err());
        assert!(
            parse(&[
                "generate", "--count", "10", "--tenant", tenant, "--number", "0800"
            ])
            .is_err()
        );
    }

    #[test]
    fn duration_flags_parse() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(std::iter::once("ocx").chain(args.iter().copied()));
        let period = [
            "--from",
            "2024-05-01T00:00:00Z",
            "--to",
            "2024-06-01T00:00:00Z",
        ];
        parse(
            &[
                &["reconcile", "summary"][..],
                &period,
                &["--tolerance", "500ms"],
            ]
            .concat(),
        )
        .expect("summary flags");
        assert!(
            parse(
                &[
                    &["reconcile", "summary"][..],
                    &period,
                    &["--tolerance", "soon"]
                ]
                .concat()
            )
            .is_err()
        );
        assert!(
            parse(&["reconcile", "summary", "--from", "2024-05-01T00:00:00Z"]).is_err(),
            "--to is required"
        );
        parse(
            &[
                &["reconcile", "discrepancies"][..],
                &period,
                &["--kind", "missing-on-carrier"],
            ]
            .concat(),
        )
        .expect("discrepancy flags");
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        parse(
            &[
                &["usage", "--tenant", tenant][..],
                &period,
                &["--by", "number"],
            ]
            .concat(),
        )
        .expect("usage flags");
        assert!(parse(&[&["usage", "--tenant", "acme"][..], &period].concat()).is_err());
        parse(&["durations", "upload", "may.csv", "--rejects", "out.csv"]).expect("upload flags");
        parse(&["durations", "list", "--limit", "5"]).expect("list flags");
    }
}
