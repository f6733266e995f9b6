// completion: prints a shell completion script; needs no coordinator.
#include "client/cli/commands.h"
#include "client/cli/completion_scripts.h"
#include "client/cli/exit_codes.h"

namespace qlorad::cli {

int PrintCompletion(const CliOptions& options, std::ostream& out) {
  // The parser accepts only bash and zsh.
  out << (options.shell == "zsh" ? kZshCompletionScript : kBashCompletionScript);
  return kExitOk;
}

}  // namespace qlorad::cli
