// expect: a component is given twice
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::abar<8>, ssmq::weights<4>, ssmq::abar<6>>;
static_assert(bad::name().size() > 0);
