// The shell completion scripts of completions/, embedded at build time (CMakeLists.txt writes
// completion_scripts.cc from completion_scripts.cc.in), so that `qloractl completion bash|zsh`
// prints what `make install` installs without looking for files.
#pragma once

namespace qlorad::cli {

extern const char* const kBashCompletionScript;  // completions/qloractl.bash
extern const char* const kZshCompletionScript;   // completions/_qloractl

}  // namespace qlorad::cli
