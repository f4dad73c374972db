//! The `opm` binary: parse the arguments and hand them to `opm::cli`.

use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    let cli = match opm::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A value opm could not read (a signal, a size, a duration) is an
        // opm error like the others: one `✘` line saying what is wrong.
        Err(e) if e.kind() == ErrorKind::ValueValidation => {
            let text = e.render().to_string();
            let text = text.trim_start_matches("error: ");
            eprintln!("✘ {}", text.split("\n\n").next().unwrap_or(text).trim_end());
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    };
    std::process::exit(opm::cli::run(cli));
}
