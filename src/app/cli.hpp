#pragma once
namespace mantissa::app {
// Parses the command line and runs the chosen subcommand; returns the exit status
// (0 success, 2 bad input: command line, deck, checkpoint, run directory).
int main_cli(int argc, char** argv);
}  // namespace mantissa::app
