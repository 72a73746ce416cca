variable "name" {
  type        = string
  description = "Entry point = folder under functions/ = Python function name."
}

variable "resource_name" {
  type        = string
  description = "Name of the deployed function."
}

variable "region" {
  type        = string
  description = "Region of the function and its trigger."
}

variable "source_bucket" {
  type        = string
  description = "Bucket holding the function zips."
}

variable "source_zip" {
  type        = string
  description = "Local path of the function's zip (built by make build)."
}

variable "environment" {
  type        = map(string)
  description = "Environment variables (Terraform is their single writer)."
}

variable "runtime_roles" {
  type        = list(string)
  description = "Project-level roles of the runtime service account (only where no narrower grant exists)."
  default     = []
}

variable "trigger" {
  type = object({
    event_type   = string
    pubsub_topic = optional(string)
    bucket       = optional(string)
  })
  description = "Eventarc trigger: a storage finalize on a bucket, or messages on a topic."
}

variable "memory" {
  type        = string
  description = "Memory of one instance."
  default     = "1Gi"
}

variable "cpu" {
  type        = string
  description = "vCPUs of one instance (README: Capacity)."
  default     = "1"
  validation {
    condition     = contains(["1", "2"], var.cpu)
    error_message = "cpu must be 1 or 2 (the code runs in one thread; 2 only helps a bq:// read)."
  }
}

variable "timeout_seconds" {
  type        = number
  description = "Longest run of one invocation."
  default     = 540
  validation {
    # 540 s: an event-driven function's longest; 180 s: one paid step and a hand-on (shared/config.py).
    condition     = var.timeout_seconds >= 180 && var.timeout_seconds <= 540
    error_message = "timeout_seconds must be between 180 and 540."
  }
}

variable "concurrency" {
  type        = number
  description = "Requests one instance serves at once (Cloud Run's max_instance_request_concurrency)."
  default     = 1
  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "max_instances" {
  type        = number
  description = "Upper bound on concurrent instances."
  default     = 10
}

variable "labels" {
  type        = map(string)
  description = "Labels."
  default     = {}
}
