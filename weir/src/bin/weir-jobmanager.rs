//! `weir-jobmanager`: serves job control and task manager membership.

fn main() -> std::process::ExitCode {
    weir::Application::stock().main_jobmanager()
}
