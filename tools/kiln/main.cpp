// kiln's command line: subcommands register themselves (commands.h); this file owns the error
// contract of DESIGN.md: one line on stderr, exit 2 for bad input, 1 for an internal failure,
// and never an uncaught exception.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "commands.h"
#include "frontend/pt2.h"
#include "ir/graph.h"
#include "engine/backend.h"
#include "program/program.h"

namespace {

void print_error(const std::string& what) {
  std::string line = what;
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  std::cerr << "kiln: error: " << line << std::endl;
}

// `kiln --version`: the release, then what this build can run with (scripts and bug reports read
// it: a build without oneDNN has no CPU convolution tactics, one without libtorch no fallback).
std::string version_text() {
  std::vector<std::string> libs = kiln::engine::build_libraries();
#ifdef KILN_HAS_TORCH
  libs.emplace_back("libtorch (fallback ops)");
#endif
  std::string text = "kiln 0.1.0\nbuilt with: ";
  if (libs.empty()) text += "kiln's own kernels only";
  for (size_t i = 0; i < libs.size(); ++i) text.append(i ? ", " : "").append(libs[i]);
  return text;
}

int run(int argc, char** argv) {
  CLI::App app{"kiln: an ahead-of-time inference compiler for PyTorch programs (torch.export .pt2)", "kiln"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text());
  for (auto add : {add_inspect_command, add_compile_command, add_refit_command, add_run_command, add_bench_command,
                   add_converters_command})
    if (add) add(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Subcommand callbacks run inside parse(); their own errors arrive below, not here.
    print_error(std::string(e.what()) + " (see kiln --help)");
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const kiln::frontend::Pt2Error& e) {
    print_error(e.what());
    return 2;
  } catch (const kiln::program::InputError& e) {
    print_error(e.what());
    return 2;
  } catch (const kiln::program::FormatError& e) {
    print_error(e.what());
    return 2;
  } catch (const kiln::cli::BadInput& e) {
    print_error(e.what());
    return 2;
  } catch (const CLI::Error& e) {
    print_error(e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    print_error("internal error: out of memory");
    return 1;
  } catch (const std::exception& e) {
    print_error(std::string("internal error: ") + e.what());
    return 1;
  } catch (...) {
    print_error("internal error: unknown exception");
    return 1;
  }
}
