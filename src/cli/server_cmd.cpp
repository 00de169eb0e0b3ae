// gptq-quant server: a layer-solve worker. Clients (RemoteSolver) send one
// linear's W and H with its scheme and get back what a local solve returns;
// the worker never reads or writes files on a client's behalf.
#include <chrono>
#include <thread>

#include "cli/command.h"
#include "gptq/backend/device.h"
#include "gptq/core/error.h"
#include "gptq/core/interrupt.h"
#include "gptq/core/log.h"
#include "gptq/rpc/credentials.h"
#include "gptq/rpc/solve_server.h"

namespace gptq::cli {
namespace {

struct ServerCmdOptions {
  std::string listen;
  std::string token_file;
  std::string tls_cert;
  std::string tls_key;
  std::string device = "auto";
  int64_t max_message_mib = 4096;
  bool insecure = false;
};

constexpr const char* kServingGroup = "Serving";

void setup_server_options(CLI::App& app, ServerCmdOptions& options) {
  app.add_option("--listen", options.listen, "HOST:PORT to serve on (port 0: any free port, logged)")
      ->required()
      ->group(kServingGroup);
  app.add_option("--device", options.device, "auto | cpu | cuda[:N]: where jobs are solved")
      ->capture_default_str()
      ->group(kServingGroup);
  app.add_option("--max-message-mib", options.max_message_mib,
                 "largest request (W + H) accepted, in MiB; larger ones get RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->group(kServingGroup);
  app.add_option("--token-file", options.token_file,
                 "file whose first line is the bearer token clients must send (keep it mode 600)")
      ->group(kSecurityGroup);
  app.add_option("--tls-cert", options.tls_cert, "PEM certificate chain: serve TLS (needs --tls-key)")
      ->group(kSecurityGroup);
  app.add_option("--tls-key", options.tls_key, "PEM private key of --tls-cert")->group(kSecurityGroup);
  app.add_flag("--insecure", options.insecure, "serve without a token; allowed on a loopback address only")
      ->group(kSecurityGroup);
}

rpc::SolveServerOptions server_options(const ServerCmdOptions& options) {
  rpc::SolveServerOptions server;
  server.listen = options.listen;
  GPTQ_CHECK(options.listen.rfind(':') != std::string::npos, "--listen: '", options.listen, "' is not HOST:PORT");
  if (options.token_file.empty()) {
    GPTQ_CHECK(options.insecure, "--token-file is required (or --insecure, on a loopback address only)");
    GPTQ_CHECK(rpc::is_loopback(options.listen), "--insecure: '", options.listen,
               "' is not a loopback address (127.0.0.1:PORT, localhost:PORT, [::1]:PORT); give --token-file");
  } else {
    server.token = rpc::read_token_file(options.token_file, "--token-file");
  }
  GPTQ_CHECK(options.tls_cert.empty() == options.tls_key.empty(), "--tls-cert and --tls-key go together");
  if (!options.tls_cert.empty()) {
    server.tls_cert_pem = rpc::read_pem_file(options.tls_cert, "--tls-cert");
    server.tls_key_pem = rpc::read_pem_file(options.tls_key, "--tls-key");
  }
  GPTQ_CHECK(options.max_message_mib >= 1 && options.max_message_mib <= (int64_t{1} << 20),
             "--max-message-mib must be between 1 and 1048576, got ", options.max_message_mib);
  server.max_request_bytes = options.max_message_mib << 20;
  server.device = backend::resolve_device(options.device);
  return server;
}

int run_server(const ServerCmdOptions& options) {
  const rpc::SolveServerOptions config = server_options(options);
  rpc::SolveServer server(config);
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  spdlog::info("serving layer solves on {}:{} (device {}, {}, {}, requests up to {} MiB)", host, server.port(),
               backend::device_name(config.device), config.tls_cert_pem.empty() ? "plaintext" : "TLS",
               config.token.empty() ? "NO token (loopback only)" : "bearer token", options.max_message_mib);
  while (pending_interrupt() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  spdlog::info("stopping: jobs still running get UNAVAILABLE and are re-queued by their clients");
  server.shutdown(std::chrono::seconds(5));
  server.wait();
  spdlog::info("served {} jobs ({} failed, {} calls rejected)", server.jobs_solved(), server.jobs_failed(),
               server.calls_rejected());
  throw_if_interrupted("serving layer solves");
  return 0;
}

}  // namespace

Command add_server_command(CLI::App& parent) {
  auto options = std::make_shared<ServerCmdOptions>();
  Command command;
  command.app = parent.add_subcommand("server", "run a layer-solve worker for remote 'quantize' clients (gRPC)");
  command.app->footer(
      "\nA worker solves one linear (or a stack of linears sharing H) per request with the\n"
      "same GPTQ/RTN code as a local run and sends back codes, scales, zeros and losses.\n"
      "Clients authenticate with the bearer token from --token-file; without one the worker\n"
      "only starts with --insecure on a loopback address. Use --tls-cert/--tls-key on any\n"
      "network you do not trust. Stop it with SIGINT/SIGTERM.\n\n"
      "Example (then: quantize ... --workers host:50051 --worker-token-file token):\n"
      "  gptq-quant server --listen 0.0.0.0:50051 --token-file token --device cuda:0\n\n"
      "Reference: docs/server.md.");
  setup_server_options(*command.app, *options);
  command.run = [options] { return run_server(*options); };
  return command;
}

}  // namespace gptq::cli
