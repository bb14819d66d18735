// One client connection: reads requests, has the handlers answer them (server/handlers.hpp),
// writes the answers. Include only from server/*.cpp (brings in Asio).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "asio/names.hpp"
#include "server/services.hpp"

namespace layercache::server {

// Serves one accepted connection until it closes. `tls` is the listener's context, or null
// for plain HTTP.
asio::awaitable<void> serve_connection(asio::ip::tcp::socket socket, asio::ssl::context* tls,
                                       worker_context& worker);

}  // namespace layercache::server
