#pragma once
namespace mantissa::app {
// Parses the command line and runs the chosen subcommand; every failure is caught, printed as one
// line and turned into the exit status of app/exit.hpp, agreed by all ranks (no rank left waiting).
int main_cli(int argc, char** argv);
}  // namespace mantissa::app
