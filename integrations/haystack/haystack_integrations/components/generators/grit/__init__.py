# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
from haystack_integrations.components.generators.grit.chat_generator import GritChatGenerator, default_tool_parser

__all__ = ["GritChatGenerator", "default_tool_parser"]
