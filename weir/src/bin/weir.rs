//! `weir`: submit and control jobs on a Weir cluster, run a job on an
//! embedded cluster, benchmark, or serve as a job manager or task manager.

fn main() -> std::process::ExitCode {
    weir::Application::stock().main()
}
