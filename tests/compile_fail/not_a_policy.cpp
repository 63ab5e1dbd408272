// expect: must be policy tags
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::abar<8, double>>;
static_assert(bad::name().size() > 0);
