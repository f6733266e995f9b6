# bash completion for qloractl (client/cli/README.md, "Shell completion").
#   source <(qloractl completion bash)     # or installed: PREFIX/share/bash-completion/completions
# Completes the commands, their options, state names after --state (comma-separated too), spec
# files after submit, and job ids after status, watch, logs (every job), cancel (queued and
# running jobs) and retry (failed and cancelled ones). Job ids come from the coordinator:
# `qloractl --json jobs`, with the --server, --token and TLS options already on the line, given
# at most 3 seconds so that a coordinator that is down never hangs the shell.

# The states `jobs --state` takes; the part before the last comma is kept as it is.
_qloractl_states() {
  local cur=$1 prefix="" last=$1
  if [[ $cur == *,* ]]; then
    prefix="${cur%,*},"
    last="${cur##*,}"
  fi
  mapfile -t COMPREPLY < <(compgen -P "$prefix" -W "queued running completed failed cancelled" -- "$last")
}

# Job ids (in the comma-separated states $2, or every state) that start with $1.
_qloractl_job_ids() {
  local cur=$1 states=$2 i word
  local -a call=("${COMP_WORDS[0]}")
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=${COMP_WORDS[i]}
    case $word in
      --server | --token | --ca-file | --cert | --key) call+=("$word" "${COMP_WORDS[i + 1]}") ;;
      --tls) call+=("$word") ;;
    esac
  done
  call+=(--json jobs --limit 200)
  [[ -n $states ]] && call+=(--state "$states")
  if command -v timeout >/dev/null 2>&1; then
    call=(timeout 3 "${call[@]}")
  fi
  # Keys are sorted and unspaced (`"id":"job-..."`); no other key of a job ends in `"id`.
  local ids
  ids=$("${call[@]}" 2>/dev/null | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  mapfile -t COMPREPLY < <(compgen -W "$ids" -- "$cur")
}

_qloractl() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local prev=${COMP_WORDS[COMP_CWORD - 1]}
  # `--state=fa`: bash splits at the `=` (COMP_WORDBREAKS), leaving `--state` `=` `fa`.
  if [[ $cur == "=" ]]; then
    cur=""
  elif [[ $prev == "=" ]] && ((COMP_CWORD >= 2)); then
    prev=${COMP_WORDS[COMP_CWORD - 2]}
  fi
  local globals="--server --token --tls --ca-file --cert --key --json --help"
  local commands="submit jobs status cancel retry watch logs workers completion"
  # Options that take a value: the word after them is neither the command nor an argument.
  local valued="--server --token --ca-file --cert --key --state --limit --from-step --from-seq --reconnect-timeout"

  # The command and how many arguments follow it, before the word being completed.
  local command="" positional=0 i word
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=${COMP_WORDS[i]}
    if [[ " $valued " == *" $word "* ]]; then
      ((i++))
      [[ ${COMP_WORDS[i]} == "=" ]] && ((i++))
      continue
    fi
    [[ $word == -* || $word == "=" ]] && continue
    if [[ -z $command ]]; then
      command=$word
    else
      ((positional++))
    fi
  done

  case $prev in
    --ca-file | --cert | --key)
      compopt -o filenames 2>/dev/null
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
      return 0
      ;;
    --state)
      _qloractl_states "$cur"
      return 0
      ;;
    --server | --token | --limit | --from-step | --from-seq | --reconnect-timeout)
      COMPREPLY=()
      return 0
      ;;
  esac

  if [[ -z $command ]]; then
    if [[ $cur == -* ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$globals" -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
    fi
    return 0
  fi

  local options=""
  case $command in
    submit) options="--follow -f --reconnect-timeout" ;;
    jobs) options="--state --limit" ;;
    retry) options="--from-scratch --follow -f --reconnect-timeout" ;;
    watch) options="--from-step --reconnect-timeout" ;;
    logs) options="--follow -f --from-seq" ;;
  esac
  if [[ $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$options $globals" -- "$cur")
    return 0
  fi
  COMPREPLY=()
  ((positional > 0)) && return 0
  case $command in
    submit)
      compopt -o filenames 2>/dev/null
      # Plain globs, not extglob's @(...): the shell may not have extglob on.
      mapfile -t COMPREPLY < <(
        compgen -f -X '!*.y*ml' -- "$cur"
        compgen -f -X '!*.json' -- "$cur"
        compgen -d -- "$cur"
      )
      ;;
    status | watch | logs) _qloractl_job_ids "$cur" "" ;;
    cancel) _qloractl_job_ids "$cur" queued,running ;;
    retry) _qloractl_job_ids "$cur" failed,cancelled ;;
    completion) mapfile -t COMPREPLY < <(compgen -W "bash zsh" -- "$cur") ;;
  esac
  return 0
}

complete -F _qloractl qloractl
