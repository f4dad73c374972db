//! `opm agent connect|status|disconnect|list`: this daemon's link to a
//! server, and, on a server, the agents it knows.

use clap::{Args, Subcommand};
use comfy_table::{presets, Table};

use super::daemon::{local, RestoreArgs};
use super::format::{self, print_json};
use super::{CliError, Format};
use crate::client::ClientError;
use crate::model::{escape_control, AgentStatus, AgentView, ConnectRequest, Health};
use crate::spec::now_ms;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Connect this opm to a server as an agent
    Connect(ConnectArgs),
    /// Show this agent's connection to its server
    Status(FormatArgs),
    /// Leave the server and become standalone; processes keep running
    Disconnect,
    /// On a server: the agents it knows
    List(FormatArgs),
    /// On a server: forget an agent and revoke its credential (it must join again)
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The agent's name or id
    pub agent: String,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server's URL, e.g. https://192.168.1.100:9876
    pub url: String,
    /// This agent's name (default: the host name)
    #[arg(long)]
    pub name: Option<String>,
    /// The server's join token (visible to other users in `ps`: prefer --token-file or OPM_SERVER_TOKEN); `opm daemon token --join` on the server prints it
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the server's join token from file F (its first line)
    #[arg(long, value_name = "F")]
    pub token_file: Option<std::path::PathBuf>,
    /// host:port this agent's API listens on and the server reaches it at (default 127.0.0.1:9877)
    #[arg(long, value_name = "A")]
    pub api_address: Option<String>,
    /// Pin the https server's certificate ahead of time: its fingerprint (SHA256:…) as `opm daemon health` shows it on the server; without it, the one the server shows now is pinned
    #[arg(long, value_name = "FP")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

pub async fn dispatch(cmd: AgentCommand) -> Result<(), CliError> {
    match cmd {
        AgentCommand::Connect(a) => connect(a).await,
        AgentCommand::Status(a) => status(a).await,
        AgentCommand::Disconnect => disconnect().await,
        AgentCommand::List(a) => list(a).await,
        AgentCommand::Remove(a) => remove(a).await,
    }
}

async fn connect(a: ConnectArgs) -> Result<(), CliError> {
    // Without one, the server decides: only a server whose TCP API has no
    // token (on loopback) takes agents without one, and says so otherwise.
    let token = super::given_token(a.token, a.token_file.as_deref(), "OPM_SERVER_TOKEN")?
        .unwrap_or_default();
    let (client, _, _) = local(&RestoreArgs::default())?;
    let req = ConnectRequest {
        server: a.url,
        token,
        name: a.name,
        api_address: a.api_address,
        fingerprint: a.fingerprint,
    };
    let tokenless = req.token.is_empty();
    let s: AgentStatus = match client.post("/daemon/agent/connect", &req).await {
        Err(ClientError::Api { status, message })
            if tokenless && status == hyper::StatusCode::UNAUTHORIZED =>
        {
            return Err(CliError::Usage(format!(
                "{message}\n  the server wants its join token: --token-file F or OPM_SERVER_TOKEN (`opm daemon token --join` on the server prints it)"
            )))
        }
        r => r?,
    };
    println!(
        "✔ connected to {} as {} (id {})",
        s.server.as_deref().unwrap_or("?"),
        s.name.as_deref().unwrap_or("?"),
        s.agent_id.as_deref().unwrap_or("?")
    );
    if let Some(fp) = &s.server_fingerprint {
        println!("  server certificate: {fp} (pinned)");
    }
    if let Some(e) = &s.endpoint {
        println!("  agent API: {e}");
    }
    if let Some(i) = s.heartbeat_interval_ms {
        println!("  heartbeat every {} ms", i);
    }
    Ok(())
}

async fn status(a: FormatArgs) -> Result<(), CliError> {
    let (client, _, _) = local(&RestoreArgs::default())?;
    let s: AgentStatus = client.get("/daemon/agent/status").await?;
    if a.format == Format::Json {
        return print_json(&s);
    }
    let Some(server) = &s.server else {
        println!("role:       {}", s.role);
        println!("not connected to a server (connect with `opm agent connect <url> --token T`)");
        return Ok(());
    };
    println!("role:       {}", s.role);
    println!("server:     {server}");
    if let Some(fp) = &s.server_fingerprint {
        println!("pinned:     {fp}");
    }
    println!(
        "agent:      {} (id {})",
        s.name.as_deref().unwrap_or("?"),
        s.agent_id.as_deref().unwrap_or("?")
    );
    println!("api:        {}", s.endpoint.as_deref().unwrap_or("-"));
    println!(
        "state:      {}",
        if s.connected {
            "connected"
        } else {
            "not connected"
        }
    );
    match s.last_heartbeat_ms {
        Some(t) => println!(
            "last beat:  {} ({} ago)",
            format::timestamp(t),
            format::duration(now_ms().saturating_sub(t))
        ),
        None => println!("last beat:  never"),
    }
    if let Some(i) = s.heartbeat_interval_ms {
        println!("interval:   {i} ms");
    }
    if s.refused {
        println!("refused:    the server refuses this agent (removed, or its credential revoked); join again with `opm agent connect {server} --token JOIN`");
    }
    if let Some(e) = &s.last_error {
        println!("last error: {}", escape_control(e));
    }
    Ok(())
}

async fn remove(a: RemoveArgs) -> Result<(), CliError> {
    let (client, _, _) = local(&RestoreArgs::default())?;
    let path = format!("/daemon/agents/{}", crate::model::encode_segment(&a.agent));
    let v: serde_json::Value = client.delete(&path).await?;
    println!(
        "✔ removed agent {} (id {}): its credential is revoked; it can only come back by joining again with the join token",
        escape_control(v["name"].as_str().unwrap_or("?")),
        escape_control(v["removed"].as_str().unwrap_or("?"))
    );
    Ok(())
}

async fn disconnect() -> Result<(), CliError> {
    let (client, _, _) = local(&RestoreArgs::default())?;
    let v: serde_json::Value = client
        .post("/daemon/agent/disconnect", &serde_json::json!({}))
        .await?;
    println!("✔ disconnected: {}", v["note"].as_str().unwrap_or(""));
    println!("  role is now standalone; the daemon and its processes keep running");
    Ok(())
}

async fn list(a: FormatArgs) -> Result<(), CliError> {
    let (client, _, _) = local(&RestoreArgs::default())?;
    let agents: Vec<AgentView> = match client.get("/daemon/agents/list").await {
        Ok(v) => v,
        Err(ClientError::Api { status, .. }) if status == hyper::StatusCode::FORBIDDEN => {
            let h: Health = client.get("/health").await?;
            match h.server {
                Some(server) => println!(
                    "this opm is an agent of {server}: the server lists its agents (`opm agent list` there, or GET {server}/daemon/agents/list)"
                ),
                None => println!(
                    "this opm is not a server (role = {}): run `opm agent list` on the server, or GET http://SERVER:9876/daemon/agents/list",
                    h.role
                ),
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if a.format == Format::Json {
        return print_json(&agents);
    }
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "name",
        "id",
        "hostname",
        "endpoint",
        "status",
        "last seen",
        "processes",
    ]);
    let now = now_ms();
    for ag in &agents {
        // What an agent sent is escaped: it cannot drive this terminal.
        let clean = |s: &str| escape_control(s).into_owned();
        t.add_row(vec![
            clean(&ag.name),
            clean(&ag.id),
            clean(&ag.hostname),
            clean(&ag.endpoint),
            clean(&ag.status),
            format!(
                "{} ago",
                format::duration(now.saturating_sub(ag.last_seen_ms))
            ),
            format!(
                "{} ({} online, {} stopped, {} errored)",
                ag.processes.total, ag.processes.online, ag.processes.stopped, ag.processes.errored
            ),
        ]);
    }
    println!("{t}");
    Ok(())
}
