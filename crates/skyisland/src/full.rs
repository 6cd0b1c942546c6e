//! `skyisland-full`, the whole `skyisland` command: the server, the initialisation of the
//! base root filesystem, the clients' commands, and running a program in a jail by hand.
//! `skyisland` (src/main.rs) hands it every command but `jail run` and `jail clean`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
