// File-system helpers for code that runs in a LibTorch process (and the torch-free tokenizer and
// dataset code, which shares them).
//
// Why not std::filesystem::remove_all: the torch 2.11 wheel's libtorch.so exports its own copy of
// libstdc++'s std::filesystem, which the dynamic linker binds ahead of libstdc++, and its
// remove_all jumps through a null pointer (seen: SIGSEGV deleting a non-empty directory).
#pragma once

#include <string>

#include "common/status.h"

namespace qlorad::trainer {

// Deletes `path` and everything below it (symlinks are removed, never followed). A missing path
// is not an error.
Status RemoveTree(const std::string& path);

// OK when `dir` does not exist or is an empty directory: an export never mixes with or replaces
// an earlier one. Else INVALID_ARGUMENT "<flag>: DIR exists and is not empty".
Status RequireNewOrEmptyDir(const std::string& dir, const std::string& flag);

// The whole file as bytes (no newline translation); NOT_FOUND "PATH: cannot open".
StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace qlorad::trainer
