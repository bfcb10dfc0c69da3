#pragma once
// Running the built `mantissa` executable from tests (MANTISSA_EXE), capturing status and output.
#include <sys/wait.h>

#include <cstdio>
#include <string>
#include "mantissa_test_paths.hpp"  // MANTISSA_SOURCE_DIR, MANTISSA_EXE

namespace mantissa::test {

struct Cmd {
  int status;          // exit status; -1 if the process did not exit normally
  std::string output;  // stdout and stderr together
};

// Runs `mantissa <args>` through the shell; `env` (e.g. "MANTISSA_STOP_AT_STEP=3") is prepended.
inline Cmd run_exe(const std::string& args, const std::string& env = "") {
  const std::string cmd = (env.empty() ? "" : env + " ") + std::string(MANTISSA_EXE) + " " + args + " 2>&1";
  Cmd r{0, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) r.output += buf;
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace mantissa::test
