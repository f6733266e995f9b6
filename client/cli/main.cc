// qloractl: the command-line client of the qlorad coordinator. See args.cc for the commands.
#include <unistd.h>

#include <iostream>

#include "client/cli/args.h"
#include "client/cli/commands.h"

int main(int argc, char** argv) {
  const auto parsed = qlorad::cli::ParseArgs(argc, argv, std::cout, std::cerr);
  if (!parsed.options) return parsed.exit_code;
  return qlorad::cli::RunCommand(*parsed.options, std::cout, std::cerr, isatty(STDOUT_FILENO) == 1);
}
