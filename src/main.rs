//! The `opm` binary: parse the arguments and hand them to `opm::cli`.

use clap::Parser;

fn main() {
    let cli = opm::cli::Cli::parse();
    std::process::exit(opm::cli::run(cli));
}
