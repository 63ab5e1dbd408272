// expect: applies to Abar only
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::weights<4, ssmq::inside_unit_circle>>;
static_assert(bad::name().size() > 0);
