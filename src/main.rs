fn main() -> std::process::ExitCode {
    buildr::cli::main()
}
