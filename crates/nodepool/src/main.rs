//! `nodepool`: the admin command. All logic lives in `nodepool-cli`.

fn main() -> std::process::ExitCode {
    nodepool_cli::main()
}
