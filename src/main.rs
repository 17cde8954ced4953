use std::process::ExitCode;

fn main() -> ExitCode {
    pgbaseline::cli::main()
}
