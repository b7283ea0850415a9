fn main() -> std::process::ExitCode {
    mirotrail::cli::main()
}
