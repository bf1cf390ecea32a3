//! `weir-taskmanager`: offers slots to a job manager and runs subtasks.

fn main() -> std::process::ExitCode {
    weir::Application::stock().main_taskmanager()
}
