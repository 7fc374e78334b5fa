//! `cargo devsup`: devsup as a cargo subcommand (cargo runs
//! `cargo-devsup devsup ARGS` for it), installed with devsup.
fn main() -> std::process::ExitCode {
    devsup::cargo_main()
}
