// expect: every argument must be a component
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::abar<8>, int>;
static_assert(bad::name().size() > 0);
