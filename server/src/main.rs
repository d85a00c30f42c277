//! `tacit-server serve | token create | token revoke | bench`.

use std::process::ExitCode;

use clap::Parser;
use tacit_server::config::{Cli, Command, TokenCommand};
use tacit_server::cors::Cors;
use tacit_server::{bench, db, privacy, serve, tokens};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tacit-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tacit-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => {
            args.policy.validate()?;
            args.timeouts.validate()?;
            // Before the database: a malformed origin is a start-up error, not a silent
            // browser refusal later.
            let cors = Cors::from_config(&args.allow_origins)?;
            let db = db::connect(&args.db, args.db_connections).await?;
            privacy::check_stored(&db, &args.policy).await?;
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            // Tests and scripts read the bound address (port 0 picks a free one) from here.
            println!("listening on http://{address}");
            tracing::info!(%address, policy = ?args.policy, origins = ?args.allow_origins, "serving");
            serve::run(
                listener,
                db,
                args.policy,
                args.timeouts,
                cors,
                serve::signals(),
            )
            .await
            .map_err(|e| format!("server failed: {e}"))
        }
        Command::Token(TokenCommand::Create {
            db,
            client,
            admin,
            models,
        }) => {
            let db = db::connect(&db, 1).await?;
            let token = tokens::create(&db, &client, admin, &models).await?;
            let scope = if models.is_empty() {
                String::new()
            } else {
                format!(" restricted to model(s) {}", models.join(", "))
            };
            eprintln!(
                "created a{} token for '{client}'{scope}; it is shown only now:",
                if admin { "n admin" } else { " client" }
            );
            println!("{token}");
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { db, client }) => {
            let db = db::connect(&db, 1).await?;
            let n = tokens::revoke(&db, &client).await?;
            println!("revoked {n} token(s) of '{client}'");
            Ok(())
        }
        Command::Bench(args) => bench::run(args).await,
    }
}
