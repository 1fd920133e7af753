//! `buildr-executor`: the lean build of buildr that backends send to the other side of a run
//! (see `buildr::cli::ExecutorCli`).

fn main() -> std::process::ExitCode {
    buildr::cli::executor_main()
}
