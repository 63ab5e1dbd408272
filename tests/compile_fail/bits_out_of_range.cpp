// expect: integer precision must be 2..16 bits
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::abar<1>>;
static_assert(bad::name().size() > 0);
