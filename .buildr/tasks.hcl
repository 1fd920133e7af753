# Example tasks. Try them with:
#   cargo run --release -- run hello
#   cargo run --release -- run test
#   cargo run --release -- run fail        # exits 7, and buildr reports it
#
# The syntax is described at the top of src/task/mod.rs.

task "hello" {
  description = "Greets on stdout and stderr, writes out/hello.txt and an executable out/hello.sh"
  script      = <<-EOT
    echo "hello from $GREETING, running in $(pwd)"
    echo "this line goes to stderr" >&2
    mkdir -p out
    echo "hi from buildr" > out/hello.txt
    printf '#!/bin/sh\necho "hello again"\n' > out/hello.sh
    chmod +x out/hello.sh
  EOT
  shell       = ["/bin/sh", "-eu", "-c"]
  env         = { GREETING = "buildr" }
  timeout     = "1m"
  outputs     = ["out/**"]
}

task "test" {
  description = "Counts the Rust source files sent to the workspace and writes the list to out/sources.txt"
  command     = ["sh", "-c", "mkdir -p out && find src -name '*.rs' | sort > out/sources.txt && wc -l < out/sources.txt"]
  input "src" { to = "src" }
  timeout     = "1m"
}

task "fail" {
  description = "Fails on purpose, with exit code 7"
  script      = "echo 'about to fail' >&2; exit 7"
}
