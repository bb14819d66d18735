// The short names of Boost.Asio and Beast that every layer of ours using them writes:
// asio::, beast::, http::. Declared once, in namespace layercache, so each folder's namespace
// sees them.
#pragma once

namespace boost::asio {}
namespace boost::beast::http {}

namespace layercache {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

}  // namespace layercache
