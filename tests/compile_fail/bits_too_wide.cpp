// expect: integer precision must be 2..16 bits
#include <ssmq/precision/integer_storage.hpp>
ssmq::qint<17>::storage_type v = 0;
