//! The `skyisland` command: the server, the initialisation of the base root filesystem,
//! and running a program in a jail by hand.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
