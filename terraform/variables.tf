variable "project_id" {
  type        = string
  description = "Project that holds everything: buckets, topics, dataset, functions and the batch jobs."
}

variable "region" {
  type        = string
  description = "Region of the functions, buckets, dataset and Vertex AI batch jobs (single region: bq:// sources need it)."
  default     = "us-central1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a single region such as us-central1 (not a multi-region, not global)."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (buckets get the project id appended to be unique)."
  default     = "gbp"
  validation {
    # 20 characters at most: "<prefix>-scheduler" must fit a 30-character service account id.
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix: 2-20 lowercase letters, digits or dashes, starting with a letter and not ending with a dash."
  }
}

variable "model" {
  type        = string
  description = "Default Gemini model of the batch jobs."
  default     = "gemini-2.5-flash"
}

variable "input_prefix" {
  type        = string
  description = "Only objects under this prefix of the input bucket (and ending .jsonl) are submitted."
  default     = "incoming/"
}

variable "max_attempts" {
  type        = number
  description = "Attempts per request, retries of retryable failures included."
  default     = 3
  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 10
    error_message = "max_attempts must be between 1 and 10."
  }
}

variable "max_requests_per_job" {
  type        = number
  description = "Requests per Vertex batch job; larger files are split (Vertex allows 200,000)."
  default     = 200000
  validation {
    condition     = var.max_requests_per_job >= 1 && var.max_requests_per_job <= 200000
    error_message = "max_requests_per_job must be between 1 and 200000."
  }
}

variable "skip_invalid_lines" {
  type        = bool
  description = "Submit the valid lines of a file with invalid ones (each invalid line becomes a FAILED row) instead of rejecting it."
  default     = false
}

variable "submit_bytes_per_invocation" {
  type        = number
  description = "Bytes of a request file one submit invocation reads before a continuation message hands the rest on (README: capacity)."
  default     = 5000000000
  validation {
    condition     = var.submit_bytes_per_invocation >= 100000000
    error_message = "submit_bytes_per_invocation must be at least 100 MB."
  }
}

variable "max_concurrent_jobs" {
  type        = number
  description = "Batch jobs this deployment keeps live on Vertex at once; the rest wait QUEUED in the ledger. Vertex's limit is 8 per project and region unless Google raised it (README: quotas); deployments sharing a project share it."
  default     = 8
  validation {
    condition     = var.max_concurrent_jobs >= 1 && var.max_concurrent_jobs == floor(var.max_concurrent_jobs)
    error_message = "max_concurrent_jobs must be a whole number of at least 1."
  }
}

variable "load_window_seconds" {
  type        = number
  description = "Rows files of a table are loaded together, one BigQuery load job per window this long (BigQuery takes 1,500 loads per table per day; 0 loads each file at once). README: quotas."
  default     = 120
  validation {
    condition     = var.load_window_seconds == 0 || var.load_window_seconds >= 120
    error_message = "load_window_seconds must be 0 (each file at once) or at least 120 (at most 720 loads a table a day, room left for retries)."
  }
}

variable "max_run_cost_usd" {
  type        = number
  description = "Budget guard: a run whose expected cost (at the batch rate) is over this waits AWAITING_APPROVAL until an approve or reject message (README: cost). null = no limit."
  default     = null
  nullable    = true
  validation {
    condition     = var.max_run_cost_usd == null || try(var.max_run_cost_usd >= 0, false)
    error_message = "max_run_cost_usd must be null (no limit) or at least 0 (0: every run waits for approval)."
  }
}

variable "max_daily_cost_usd" {
  type        = number
  description = "Budget guard: a run that would take the UTC day's spend (actual for finished runs, expected for the rest, retries included) over this waits AWAITING_APPROVAL. null = no limit."
  default     = null
  nullable    = true
  validation {
    condition     = var.max_daily_cost_usd == null || try(var.max_daily_cost_usd >= 0, false)
    error_message = "max_daily_cost_usd must be null (no limit) or at least 0."
  }
}

variable "approval_timeout_hours" {
  type        = number
  description = "A run held by the budget guard that nobody approves or rejects within this long is rejected (keep it far below work_backstop_days: its staged chunks wait that long)."
  default     = 72
  nullable    = false
  validation {
    condition     = var.approval_timeout_hours >= 1 && var.approval_timeout_hours == floor(var.approval_timeout_hours)
    error_message = "approval_timeout_hours must be a whole number of at least 1."
  }
}

variable "prices_file" {
  type        = string
  description = "A price table of your own (negotiated prices; the shape of shared/core/schemas/prices.json), uploaded to the work bucket and used instead of the shipped one. null = the shipped table."
  default     = null
  nullable    = true
  validation {
    condition = var.prices_file == null || try(
      jsondecode(file(var.prices_file)).version != "" && length(jsondecode(file(var.prices_file)).models) > 0 && alltrue([
        for name, m in jsondecode(file(var.prices_file)).models :
        m.input >= 0 && m.output >= 0 && m.cached_input >= 0 && m.max_output_tokens >= 1 && floor(m.max_output_tokens) == m.max_output_tokens
        && try(m.batch_discount >= 0 && m.batch_discount < 1, !can(m.batch_discount))
        && try(m.long_context.above_prompt_tokens >= 1 && m.long_context.input >= 0 && m.long_context.output >= 0 && m.long_context.cached_input >= 0, !can(m.long_context))
      ]) && try(jsondecode(file(var.prices_file)).batch_discount >= 0 && jsondecode(file(var.prices_file)).batch_discount < 1, !can(jsondecode(file(var.prices_file)).batch_discount)),
      false
    )
    error_message = "prices_file must be a readable JSON price table: a \"version\", and \"models\" each with input, output, cached_input (USD per 1M tokens) and max_output_tokens (see shared/core/schemas/prices.json)."
  }
}

variable "alert_emails" {
  type        = list(string)
  description = "Who the alert policies notify (one email notification channel each); empty: the alerts open incidents in Cloud Monitoring only."
  default     = []
  nullable    = false
  validation {
    condition     = alltrue([for email in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", email))])
    error_message = "alert_emails must be email addresses."
  }
}

variable "run_sla_hours" {
  type        = number
  description = "A run not complete this long after it was created is logged \"run overdue\" (once) and alerts. Batch jobs may queue 72 h and run 24 h on Vertex: set it to what your users expect."
  default     = 48
  nullable    = false
  validation {
    condition     = var.run_sla_hours >= 1 && var.run_sla_hours == floor(var.run_sla_hours)
    error_message = "run_sla_hours must be a whole number of at least 1."
  }
}

variable "alert_thresholds" {
  type = object({
    error_rate   = optional(number, 0.05) # failed (retried) events / all events of a function, over 15 min
    failed_share = optional(number, 0.2)  # FAILED + MISSING rows / rows of a completed run
    poll_silence = optional(number, 900)  # seconds without a poll tick
  })
  description = "Thresholds of the alert policies (README: Observability)."
  default     = {}
  nullable    = false
  validation {
    condition     = var.alert_thresholds.error_rate > 0 && var.alert_thresholds.error_rate <= 1 && var.alert_thresholds.failed_share > 0 && var.alert_thresholds.failed_share <= 1 && var.alert_thresholds.poll_silence >= 180 && var.alert_thresholds.poll_silence <= 84600 && var.alert_thresholds.poll_silence % 60 == 0
    error_message = "error_rate and failed_share are shares in (0, 1]; poll_silence is whole minutes from 180 s (three ticks) to 84,600 s (Monitoring's longest absence)."
  }
}

variable "isolate_work_bucket" {
  type        = bool
  description = "Deny the Vertex AI service agent (its Google-granted project role reaches every bucket) the work bucket: ledger, rows, reports. Needs roles/iam.denyAdmin (granted on the organization) and tag admin/user for the deployer; on an upgrade, turn it on once no job of an earlier release runs (README: deploy)."
  default     = false
  nullable    = false
}

variable "poll_schedule" {
  type        = string
  description = "Cloud Scheduler cron of the poll tick."
  default     = "* * * * *"
}

variable "queue_timeout_seconds" {
  type        = number
  description = "A job queued longer is cancelled and its rows re-submitted (Vertex expires queued jobs after 72 h)."
  default     = 259200
}

variable "run_timeout_seconds" {
  type        = number
  description = "A job running longer is cancelled and its rows re-submitted (Vertex stops at 24 h)."
  default     = 86400
}

variable "cancel_timeout_seconds" {
  type        = number
  description = "A job still cancelling on Vertex after this long is given up on and its rows re-submitted."
  default     = 3600
}

variable "work_retention_days" {
  type        = number
  description = "Work files (staged inputs, Vertex outputs, staged rows) are deleted this many days after their run finished."
  default     = 30
  validation {
    condition     = var.work_retention_days >= 1
    error_message = "work_retention_days must be at least 1."
  }
}

variable "work_backstop_days" {
  type        = number
  description = "Work files are deleted at this age whatever their run's state: a backstop for files written after their run was done. Far longer than any run can last."
  default     = 180
  validation {
    condition     = var.work_backstop_days >= 60
    error_message = "work_backstop_days must be at least 60: a run may take days (72 h queued, 24 h running, retries)."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels on every resource that takes them."
  default     = {}
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the BigQuery tables from terraform destroy."
  default     = true
}

variable "function_source_dir" {
  type        = string
  description = "Folder of the function zips built by `make build` (<function>.zip)."
  default     = "../build"
}
