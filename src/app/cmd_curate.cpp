// `mantissa curate`: placeholder until the curation job lands (issue 5).
#include "app/app.hpp"
#include "app/jobs.hpp"

namespace mantissa::app {

int cmd_curate(AppContext&) { throw InputError("mantissa curate: not implemented yet"); }

}  // namespace mantissa::app
