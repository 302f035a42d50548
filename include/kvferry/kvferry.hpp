// kvferry/kvferry.hpp — everything an engine needs: #include <kvferry/kvferry.hpp>.
// The public headers need only the standard library (nothing of CAF, UCX, spdlog or toml++).
#pragma once

#include "block.hpp"
#include "config.hpp"
#include "errc.hpp"
#include "health.hpp"
#include "node.hpp"
#include "result.hpp"
#include "transfer.hpp"
