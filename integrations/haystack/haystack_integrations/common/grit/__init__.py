# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Haystack runtime for the GRIT YAML pipelines: `pipelines` loads, configures and runs them."""
