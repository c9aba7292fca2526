// The CLI's subcommands. Each lives in its own file (cmd_<name>.cpp) and registers itself on the
// app through one function below; main.cpp calls them in this order.
//
// The functions are declared weak so the CLI links before every subcommand exists: main.cpp
// calls only those whose definition was linked in (a weak undefined function's address is
// null). Defining one in a cmd_*.cpp file (tools/kiln/ globs *.cpp) is all it takes to add it.
//
// Errors: a subcommand throws; main.cpp turns the exception into one line on stderr,
// `kiln: error: ...`, and exit code 2 for bad input (frontend::Pt2Error, program::InputError,
// program::FormatError, CLI::Error, kiln::cli::BadInput) or 1 for anything else.
#pragma once

#include <stdexcept>

namespace CLI {
class App;
}

namespace kiln::cli {

// Thrown by subcommands for bad arguments or files that no library error type covers.
struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace kiln::cli

__attribute__((weak)) void add_inspect_command(CLI::App& app);
__attribute__((weak)) void add_compile_command(CLI::App& app);
__attribute__((weak)) void add_refit_command(CLI::App& app);
__attribute__((weak)) void add_run_command(CLI::App& app);
__attribute__((weak)) void add_bench_command(CLI::App& app);
__attribute__((weak)) void add_converters_command(CLI::App& app);
