use std::process::ExitCode;

fn main() -> ExitCode {
    devsup::main()
}
