// expect: ssmq::bbar must not be given
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::bbar<4>, ssmq::cbar<4, ssmq::carries_bbar>>;
static_assert(bad::name().size() > 0);
